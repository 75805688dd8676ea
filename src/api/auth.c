/* auth.c — password checks through PAM.
 *
 * An installed host uses a service in /etc/pam.d; the embedded default uses a
 * private PAM configuration directory in the state directory (pam_start_confdir)
 * whose stack is pam_pwdfile over a password file there.  PAM may block (and
 * sleep on failure), so this only ever runs on a worker thread.
 */
#include "api/api.h"

#include <crypt.h>
#include <errno.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"

struct conv_data {
	const char *password;
};

static int conv_fn(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
	struct conv_data *d = data;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	struct pam_response *r = calloc((size_t)n, sizeof(*r));
	if (!r)
		return PAM_BUF_ERR;
	for (int i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
		case PAM_PROMPT_ECHO_ON:
			r[i].resp = strdup(d->password);
			if (!r[i].resp) {
				for (int k = 0; k < i; k++)
					free(r[k].resp);
				free(r);
				return PAM_BUF_ERR;
			}
			break;
		default:
			break;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

int auth_pam(const char *service, const char *user, const char *password, struct xerr *err)
{
	struct conv_data d = {password};
	struct pam_conv conv = {conv_fn, &d};
	pam_handle_t *h = NULL;
	int rc = pam_start_confdir(service, user, &conv, api_srv.pam_confdir, &h);
	if (rc == PAM_SUCCESS)
		rc = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (rc == PAM_SUCCESS)
		rc = pam_acct_mgmt(h, PAM_SILENT);
	const char *why = pam_strerror(h, rc);
	if (rc != PAM_SUCCESS)
		xerr_set(err, "SESSION_AUTHENTICATION_FAILED", 2, user, why ? why : "Authentication failure");
	if (h)
		pam_end(h, rc);
	return rc == PAM_SUCCESS ? 0 : -1;
}

int auth_pwdfile_set(const char *file, const char *user, const char *password)
{
	char *salt = crypt_gensalt_ra("$6$", 0, NULL, 0);
	struct crypt_data cd;
	memset(&cd, 0, sizeof(cd));
	const char *hash = salt ? crypt_r(password, salt, &cd) : NULL;
	free(salt);
	if (!hash || hash[0] == '*')
		return -EINVAL;
	/* keep every other user's line; replace or append this user's */
	struct buf out;
	buf_init(&out);
	size_t ulen = strlen(user);
	FILE *f = fopen(file, "r");
	if (f) {
		char line[4096];
		while (fgets(line, sizeof(line), f))
			if (!(strncmp(line, user, ulen) == 0 && line[ulen] == ':'))
				buf_adds(&out, line);
		fclose(f);
	}
	buf_printf(&out, "%s:%s\n", user, hash);
	int rc = util_write_file(file, out.p, 0600);
	buf_free(&out);
	return rc;
}
