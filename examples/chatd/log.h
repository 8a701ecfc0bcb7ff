/* stderr logging with levels for hark-chatd. */
#ifndef CHATD_LOG_H
#define CHATD_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* The threshold: messages above it are not printed. Set once by main. */
void log_set_level(enum log_level level);
int log_parse_level(const char *name); /* -1 when unknown */
const char *log_level_name(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
