/* tls.c — OpenSSL 3 glue for the HTTP server: the server context, TLS
 * sessions over memory BIOs (the libuv TCP stream carries the ciphertext),
 * and the self-signed certificate made on first start. */
#include "http/http.h"
#include "http/http_internal.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static void log_ssl_errors(const char *what)
{
	unsigned long e;
	char msg[256];
	bool any = false;
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, msg, sizeof msg);
		log_warn("http: %s: %s", what, msg);
		any = true;
	}
	if (!any)
		log_warn("http: %s failed", what);
}

/* ---- server context --------------------------------------------------- */

SSL_CTX *http_tls_ctx_new(const char *cert_file, const char *key_file)
{
	if (!cert_file || !*cert_file) {
		log_err("http: TLS listener needs a certificate file");
		return NULL;
	}
	if (!key_file || !*key_file)
		key_file = cert_file;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		log_ssl_errors("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
				 SSL_OP_NO_COMPRESSION);
	/* Idle keep-alive connections then hold no TLS record buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		log_ssl_errors(cert_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_ssl_errors(key_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* ---- sessions over memory BIOs ---------------------------------------- */

int http_tls_sess_init(struct http_tls_sess *t, SSL_CTX *ctx)
{
	memset(t, 0, sizeof *t);
	t->ssl = SSL_new(ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		SSL_free(t->ssl);
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		memset(t, 0, sizeof *t);
		return -1;
	}
	/* An empty memory BIO means "try again later", not EOF. */
	BIO_set_mem_eof_return(t->rbio, -1);
	BIO_set_mem_eof_return(t->wbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both now */
	SSL_set_accept_state(t->ssl);
	return 0;
}

void http_tls_sess_free(struct http_tls_sess *t)
{
	if (t && t->ssl) {
		SSL_free(t->ssl);
		memset(t, 0, sizeof *t);
	}
}

int http_tls_sess_input(struct http_tls_sess *t, const char *ct, size_t n,
			char **buf, size_t *len, size_t *cap, size_t max)
{
	if (t->failed)
		return -1;
	while (n > 0) {
		int w = BIO_write(t->rbio, ct, n > INT32_MAX ? INT32_MAX : (int)n);
		if (w <= 0) {
			t->failed = true;
			return -1;
		}
		ct += w;
		n -= (size_t)w;
	}
	for (;;) {
		if (*cap - *len < 16384 + 1) {
			size_t ncap = *cap ? *cap : 16384;
			while (ncap - *len < 16384 + 1)
				ncap *= 2;
			char *nb = realloc(*buf, ncap);
			if (!nb) {
				t->failed = true;
				return -1;
			}
			*buf = nb;
			*cap = ncap;
		}
		size_t room = *cap - *len - 1;
		if (room > 65536)
			room = 65536;
		int r = SSL_read(t->ssl, *buf + *len, (int)room);
		if (r > 0) {
			*len += (size_t)r;
			if (*len > max) {
				t->failed = true;
				return -1;
			}
			continue;
		}
		int err = SSL_get_error(t->ssl, r);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			return 0; /* need more ciphertext; handshake output may be pending */
		if (err == SSL_ERROR_ZERO_RETURN) {
			t->failed = t->peer_closed = true; /* peer sent close_notify */
			return -1;
		}
		ERR_clear_error();
		t->failed = true;
		return -1;
	}
}

int http_tls_sess_encrypt(struct http_tls_sess *t, const void *p, size_t n)
{
	if (t->failed)
		return -1;
	const char *s = p;
	while (n > 0) {
		size_t chunk = n > (1u << 30) ? (1u << 30) : n;
		size_t written = 0;
		int r = SSL_write_ex(t->ssl, s, chunk, &written);
		if (r <= 0) {
			/* Memory BIOs never fill and renegotiation is off, so any
			 * failure here (including a write before the handshake has
			 * finished, which we never do) is fatal. */
			ERR_clear_error();
			t->failed = true;
			return -1;
		}
		s += written;
		n -= written;
	}
	return 0;
}

size_t http_tls_sess_pending(const struct http_tls_sess *t)
{
	return t->wbio ? BIO_ctrl_pending(t->wbio) : 0;
}

size_t http_tls_sess_take(struct http_tls_sess *t, char *dst, size_t n)
{
	size_t got = 0;
	while (got < n) {
		size_t want = n - got;
		int r = BIO_read(t->wbio, dst + got, want > INT32_MAX ? INT32_MAX : (int)want);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

void http_tls_sess_shutdown(struct http_tls_sess *t)
{
	if (t->ssl && !t->failed && SSL_is_init_finished(t->ssl))
		SSL_shutdown(t->ssl);
	ERR_clear_error();
}

int http_tls_sess_detach(struct http_tls_sess *t, SSL **ssl, char **ct, size_t *ct_len)
{
	*ssl = NULL;
	*ct = NULL;
	*ct_len = 0;
	if (!t->ssl || (t->failed && !t->peer_closed) || BIO_ctrl_pending(t->wbio) > 0)
		return -1;
	/* Normally empty: every input is decrypted until the SSL object wants
	 * more, and a partial record then sits in the SSL object itself. */
	size_t n = BIO_ctrl_pending(t->rbio);
	if (n > 0) {
		*ct = malloc(n);
		if (!*ct)
			return -1;
		int r = BIO_read(t->rbio, *ct, (int)n);
		*ct_len = r > 0 ? (size_t)r : 0;
	}
	*ssl = t->ssl; /* still owns the memory BIOs until SSL_set_bio */
	memset(t, 0, sizeof *t);
	return 0;
}

/* ---- self-signed certificate ------------------------------------------ */

static bool is_ip_literal(const char *s)
{
	unsigned char tmp[16];
	return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* Write PEM data through a temp file and rename, so a crash never leaves a
 * half-written key or certificate behind.  mode is applied at creation. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
	size_t n = strlen(path) + 16;
	char *tmp = malloc(n);
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, n, "%s.tmpXXXXXX", path);
	int fd = mkstemp(tmp); /* created 0600 */
	if (fd < 0) {
		int e = -errno;
		free(tmp);
		return e;
	}
	if (fchmod(fd, mode) < 0) {
		int e = -errno;
		close(fd);
		unlink(tmp);
		free(tmp);
		return e;
	}
	FILE *f = fdopen(fd, "w");
	if (!f) {
		int e = -errno;
		close(fd);
		unlink(tmp);
		free(tmp);
		return e;
	}
	int ok = 1;
	if (key)
		ok = ok && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (cert)
		ok = ok && PEM_write_X509(f, cert);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		int e = errno ? -errno : -EIO;
		unlink(tmp);
		free(tmp);
		return e;
	}
	free(tmp);
	return 0;
}

int http_tls_ensure_cert(const char *cert_file, const char *key_file, const char *cn)
{
	if (!cert_file || !*cert_file)
		return -EINVAL;
	bool one_file = !key_file || !*key_file || strcmp(key_file, cert_file) == 0;
	if (access(cert_file, F_OK) == 0 && (one_file || access(key_file, F_OK) == 0))
		return 0;
	if (!cn || !*cn)
		cn = "localhost";
	if (strlen(cn) > 64) /* X.509 upper bound for a CN */
		return -EINVAL;

	int rc = -EIO;
	X509 *x = NULL;
	char *san = NULL;
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	if (!pkey)
		goto out;
	x = X509_new();
	if (!x)
		goto out;
	X509_set_version(x, 2); /* v3 */
	unsigned char serial[16];
	if (RAND_bytes(serial, sizeof serial) != 1)
		goto out;
	serial[0] &= 0x7f; /* positive */
	BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
		BN_free(bn);
		goto out;
	}
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600); /* tolerate clock skew */
	X509_time_adj_ex(X509_getm_notAfter(x), 3652, 0, NULL); /* 10 years */
	if (!X509_set_pubkey(x, pkey))
		goto out;
	X509_NAME *name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
		goto out;
	X509_set_issuer_name(x, name); /* self-signed */

	size_t sl = strlen(cn) + 64;
	san = malloc(sl);
	if (!san)
		goto out;
	if (is_ip_literal(cn)) {
		if (strcmp(cn, "127.0.0.1") == 0)
			snprintf(san, sl, "IP:127.0.0.1");
		else
			snprintf(san, sl, "IP:%s,IP:127.0.0.1", cn);
	} else {
		snprintf(san, sl, "DNS:%s,IP:127.0.0.1", cn);
	}
	if (add_ext(x, NID_subject_alt_name, san) < 0 ||
	    add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(x, NID_subject_key_identifier, "hash") < 0)
		goto out;
	if (!X509_sign(x, pkey, EVP_sha256()))
		goto out;

	/* The key first, so a certificate file never exists without its key. */
	if (one_file) {
		rc = write_pem(cert_file, 0600, pkey, x);
	} else {
		rc = write_pem(key_file, 0600, pkey, NULL);
		if (rc == 0)
			rc = write_pem(cert_file, 0644, NULL, x);
	}
out:
	if (rc == -EIO)
		log_ssl_errors("making a self-signed certificate");
	ERR_clear_error();
	free(san);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return rc;
}
