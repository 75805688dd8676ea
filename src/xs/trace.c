/* trace.c — the access trace (-T FILE), in the shape of xenstored's:
 *
 *   IN  <conn> <date time> <TYPE> (<payload, NULs shown as spaces>)
 *   OUT <conn> <date time> <TYPE> (<payload>)
 *   CREATE connection <conn> domid <d> / DESTROY connection <conn> (<why>)
 *
 * One line per request, reply and watch event.  The file is block-buffered
 * and flushed once per loop wakeup (after a batch of requests).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "xs/xsd.h"

int xsd_trace_open(const char *path)
{
	xsd_trace_close();
	FILE *f = fopen(path, "a");
	if (!f)
		return -errno;
	setvbuf(f, NULL, _IOFBF, 1 << 16);
	xsd.trace = f;
	return 0;
}

void xsd_trace_close(void)
{
	if (xsd.trace) {
		fclose(xsd.trace);
		xsd.trace = NULL;
	}
}

void xsd_trace_flush(void)
{
	if (xsd.trace)
		fflush(xsd.trace);
}

void xsd_trace_line(const char *fmt, ...)
{
	if (!xsd.trace)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(xsd.trace, fmt, ap);
	va_end(ap);
}

void xsd_trace_io(const struct xsd_conn *c, bool out, const struct xs_hdr *h,
		  const char *payload)
{
	FILE *f = xsd.trace;
	if (!f)
		return;
	static time_t last;
	static char stamp[32];
	time_t now = time(NULL);
	if (now != last) {
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d %H:%M:%S", &tm);
		last = now;
	}
	fprintf(f, "%s %" PRIu64 " %s %s (", out ? "OUT" : "IN", c->serial, stamp,
		xs_type_name(h->type));
	for (uint32_t i = 0; i < h->len && payload; i++) {
		unsigned char ch = (unsigned char)payload[i];
		putc(ch == 0 ? ' ' : (ch < 32 || ch == 127) ? '?' : ch, f);
	}
	fputs(")\n", f);
}
