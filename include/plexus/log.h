/* plexus — logging: one line per event on stderr (or a file), text or JSON,
 * each tagged with the worker that logged it. */
#ifndef PLEXUS_LOG_H
#define PLEXUS_LOG_H

#include "plexus/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum px_log_level { PX_LOG_DEBUG = 0, PX_LOG_INFO, PX_LOG_WARN, PX_LOG_ERROR, PX_LOG_OFF };

/** Parse "debug|info|warn|error|off"; -1 if unknown. */
PX_EXTERN int px_log_level_parse(const char *s);
PX_EXTERN void px_log_set_level(int level);
PX_EXTERN int px_log_get_level(void);
/** "text" (default) or "json". Returns 0 or -EINVAL. */
PX_EXTERN int px_log_set_format(const char *format);
/** Log to `path` (appending) instead of stderr; NULL restores stderr. 0 or -errno. */
PX_EXTERN int px_log_set_file(const char *path);
/** Re-open the log file (after rotation; SIGHUP). A no-op on stderr. */
PX_EXTERN int px_log_reopen(void);
/** Hand every formatted line (newline included) to `fn` instead of writing it to the log
 * file or stderr; NULL restores them. `fn` runs on the logging thread (any thread), must
 * not block and must not log. Set it before threads that log start, clear it after they
 * stopped (the Node addon passes lines to JavaScript this way). */
PX_EXTERN void px_log_set_sink(void (*fn)(int level, const char *line, size_t len, void *ud),
                               void *ud);
PX_EXTERN void px_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define px_log_enabled(level) ((level) >= px_log_get_level())

#ifdef __cplusplus
}
#endif
#endif
