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

static int run_credctl(int argc, char **argv, int daemon_tried) {
    char self[PATH_MAX];
    if (own_path(self, sizeof self) != 0) {
        fprintf(stderr, "credctl: cannot find the credctl command: this executable's path is unknown\n");
        return 1;
    }
    char script[PATH_MAX];
    char *slash = strrchr(self, '/');
    size_t dir_len = slash != NULL ? (size_t)(slash - self) : 0;
    int n = snprintf(script, sizeof script, "%.*s/credctl", (int)dir_len, self);
    if (n < 0 || (size_t)n >= sizeof script || access(script, X_OK) != 0) {
        fprintf(stderr, "credctl: cannot find the credctl command next to %s\n", self);
        return 1;
    }
    if (daemon_tried && setenv("CREDCTL_DAEMON_TRIED", "1", 1) != 0) {
        fprintf(stderr, "credctl: cannot set CREDCTL_DAEMON_TRIED: %s\n", strerror(errno));
        return 1;
    }
    char *no_args[] = {script, NULL};
    if (argc < 1) {
        argv = no_args;
    }
    argv[0] = script;
    execv(script, argv);
    fprintf(stderr, "credctl: cannot run %s: %s\n", script, strerror(errno));
    return 1;
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
    return run_credctl(argc, argv, credctl_fast_daemon_tried(result));
}
