/*
 * credctl-fast: `credctl` for credential_process and executable-sourced
 * credentials, answering a daemon cache hit without starting Python.
 *
 * On a hit it prints the daemon's body and exits 0. Everything else is handed,
 * unchanged (arguments, environment, stdin), to the `credctl` command next to
 * this executable's real path; when the daemon was asked and failed, with
 * CREDCTL_DAEMON_TRIED=1 so the Python side does not ask it a second time.
 */
#define _GNU_SOURCE
#include "credctl_native.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __APPLE__
#include <mach-o/dyld.h>
#endif

#define BODY_CAP 65536

static char body[BODY_CAP];

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The real path of this executable, symlinks resolved; 0 on success. */
static int own_path(char *out, size_t cap) {
#ifdef __APPLE__
    char raw[PATH_MAX];
    uint32_t size = sizeof raw;
    if (_NSGetExecutablePath(raw, &size) != 0) {
        return -1;
    }
    char resolved[PATH_MAX];
    if (realpath(raw, resolved) == NULL) {
        return -1;
    }
#else
    char resolved[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", resolved, sizeof resolved - 1);
    if (n <= 0) {
        return -1;
    }
    resolved[n] = '\0';
#endif
    size_t len = strlen(resolved);
    if (len >= cap) {
        return -1;
    }
    memcpy(out, resolved, len + 1);
    return 0;
}

/* Length of the well-formed UTF-8 sequence at `s`, 0 when there is none. */
static size_t utf8_sequence(const unsigned char *s) {
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    size_t len;
    if (s[0] < 0x80) {
        return 1;
    } else if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        lo = s[0] == 0xE0 ? 0xA0 : lo; /* no overlong forms */
        hi = s[0] == 0xED ? 0x9F : hi; /* no surrogates */
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        lo = s[0] == 0xF0 ? 0x90 : lo;
        hi = s[0] == 0xF4 ? 0x8F : hi;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

/* `text` as the inside of a JSON string: quotes, backslashes and control
 * characters escaped, bytes that are not UTF-8 (a path can hold any) as
 * U+FFFD, so the document always parses. `out` holds 6 bytes per input byte. */
static size_t json_escape(char *out, const char *text) {
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (*s != '\0') {
        size_t len = utf8_sequence(s);
        if (len == 0) {
            memcpy(out + n, "\\ufffd", 6);
            n += 6;
            s++;
        } else if (*s == '"' || *s == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*s++;
        } else if (*s < 0x20) {
            n += (size_t)sprintf(out + n, "\\u%04x", *s++);
        } else {
            memcpy(out + n, s, len);
            n += len;
            s += len;
        }
    }
    return n;
}

/*
 * Says why the credctl command cannot run, and returns the exit status. A GCP
 * executable-sourced call answers on stdout in that format and prints nothing
 * on stderr, since google-auth reads stdout and merges stderr into it; every
 * other call gets the CLI's one `credctl: ` line on stderr.
 */
__attribute__((format(printf, 2, 3)))
static int cannot_run(int gcp_executable, const char *format, ...) {
    char message[PATH_MAX + 256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (!gcp_executable) {
        fprintf(stderr, "credctl: %s\n", message);
        return 1;
    }
    static const char prefix[] = "{\"version\":1,\"success\":false,\"code\":\"CREDCTL_NOT_FOUND\","
                                 "\"message\":\"";
    static const char suffix[] = "\"}\n";
    static char document[sizeof prefix + 6 * sizeof message + sizeof suffix];
    size_t n = sizeof prefix - 1;
    memcpy(document, prefix, n);
    n += json_escape(document + n, message);
    memcpy(document + n, suffix, sizeof suffix - 1);
    n += sizeof suffix - 1;
    /* Nothing runs after this, so a closed stdout may as well fail quietly. */
    signal(SIGPIPE, SIG_IGN);
    write_all(STDOUT_FILENO, document, n);
    return 1;
}

static int run_credctl(int argc, char **argv, int daemon_tried, int gcp_executable) {
    char self[PATH_MAX];
    if (own_path(self, sizeof self) != 0) {
        return cannot_run(gcp_executable,
                          "cannot find the credctl command: this executable's path is unknown");
    }
    char script[PATH_MAX];
    char *slash = strrchr(self, '/');
    size_t dir_len = slash != NULL ? (size_t)(slash - self) : 0;
    int n = snprintf(script, sizeof script, "%.*s/credctl", (int)dir_len, self);
    if (n < 0 || (size_t)n >= sizeof script || access(script, X_OK) != 0) {
        return cannot_run(gcp_executable, "cannot find the credctl command next to %s", self);
    }
    if (daemon_tried && setenv("CREDCTL_DAEMON_TRIED", "1", 1) != 0) {
        return cannot_run(gcp_executable, "cannot set CREDCTL_DAEMON_TRIED: %s", strerror(errno));
    }
    char *no_args[] = {script, NULL};
    if (argc < 1) {
        argv = no_args;
    }
    argv[0] = script;
    execv(script, argv);
    return cannot_run(gcp_executable, "cannot run %s: %s", script, strerror(errno));
}

int main(int argc, char **argv) {
    size_t body_len = 0;
    int result = argc >= 1 ? credctl_fast_auth(argc - 1, argv + 1, body, sizeof body, &body_len)
                           : CREDCTL_FAST_NOT_HANDLED;
    if (result == CREDCTL_FAST_OK) {
        /* Like Python: a closed stdout is an error message, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        if (write_all(STDOUT_FILENO, body, body_len) != 0) {
            fprintf(stderr, "credctl: cannot write the credentials to stdout: %s\n", strerror(errno));
            return 1;
        }
        return 0;
    }
    int gcp_executable = argc >= 1 && credctl_fast_is_gcp_executable(argc - 1, argv + 1);
    return run_credctl(argc, argv, credctl_fast_daemon_tried(result), gcp_executable);
}
