/* log.h — one line per event to stderr (daemons only; libraries don't log). */
#ifndef CX_LOG_H
#define CX_LOG_H
enum log_level { LOG_ERR_ = 0, LOG_WARN_, LOG_INFO_, LOG_DEBUG_ };
extern int log_level_max;
void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) log_msg(LOG_ERR_, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN_, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO_, __VA_ARGS__)
#define log_debug(...) do { if (log_level_max >= LOG_DEBUG_) log_msg(LOG_DEBUG_, __VA_ARGS__); } while (0)
#endif
