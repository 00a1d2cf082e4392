/*
 * The fast path of `credctl auth`: the one place that decides whether an
 * argv is a plain auth call the daemon can answer, and asks it. Shared by
 * the Python entry (credctl/__main__.py) and the credctl-fast launcher.
 *
 * Anything this file does not recognise is left to the full CLI, which owns
 * the errors, the help and every other flag: falling back is always safe.
 */
#include "credctl_native.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

static const char *option_value(const char *arg, const char *name, int argc, char **argv, int *i) {
    size_t name_len = strlen(name);
    if (strncmp(arg, name, name_len) != 0) {
        return NULL;
    }
    if (arg[name_len] == '=') {
        return arg + name_len + 1;
    }
    if (arg[name_len] == '\0' && *i + 1 < argc) {
        *i += 1;
        return argv[*i];
    }
    return NULL;
}

static int daemon_disabled(void) {
    const char *no_daemon = getenv("CREDCTL_NO_DAEMON");
    return no_daemon != NULL && no_daemon[0] != '\0' && strcmp(no_daemon, "0") != 0;
}

/* The provider and format of an `auth` call the fast path serves, defaults
 * filled in; 0 for anything else. Reads argv only, not the environment. */
static int parse_auth(int argc, char **argv, const char **provider_out, const char **format_out,
                      int *refresh_out) {
    if (argc < 1 || strcmp(argv[0], "auth") != 0) {
        return 0;
    }
    const char *provider = NULL;
    const char *format = NULL;
    int refresh = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value;
        if (strcmp(arg, "--refresh") == 0 && !refresh) {
            refresh = 1;
        } else if ((value = option_value(arg, "--provider", argc, argv, &i)) != NULL &&
                   provider == NULL) {
            provider = value;
        } else if ((value = option_value(arg, "--format", argc, argv, &i)) != NULL &&
                   format == NULL) {
            format = value;
        } else {
            /* Unknown, repeated or incomplete: the CLI decides what it means. */
            return 0;
        }
    }
    if (provider == NULL) {
        provider = "aws";
    }
    if (strcmp(provider, "aws") == 0) {
        if (format == NULL) {
            format = "credential_process";
        }
        if (strcmp(format, "credential_process") != 0 && strcmp(format, "env") != 0) {
            return 0;
        }
    } else if (strcmp(provider, "gcp") == 0) {
        if (format == NULL) {
            format = "executable";
        }
        if (strcmp(format, "executable") != 0 && strcmp(format, "env") != 0) {
            return 0;
        }
    } else {
        return 0;
    }
    *provider_out = provider;
    *format_out = format;
    *refresh_out = refresh;
    return 1;
}

int credctl_fast_auth_target(int argc, char **argv, char *target, size_t target_cap) {
    const char *provider;
    const char *format;
    int refresh;
    if (daemon_disabled() || !parse_auth(argc, argv, &provider, &format, &refresh)) {
        return CREDCTL_FAST_NOT_HANDLED;
    }
    int n = snprintf(target, target_cap, "/v1/credentials/%s?format=%s%s", provider, format,
                     refresh ? "&refresh=1" : "");
    if (n < 0 || (size_t)n >= target_cap) {
        return CREDCTL_FAST_NOT_HANDLED;
    }
    return CREDCTL_FAST_OK;
}

int credctl_fast_is_gcp_executable(int argc, char **argv) {
    const char *provider;
    const char *format;
    int refresh;
    return parse_auth(argc, argv, &provider, &format, &refresh) && strcmp(provider, "gcp") == 0 &&
           strcmp(format, "executable") == 0;
}

static const char *user_home(void) {
    const char *home = getenv("HOME");
    if (home != NULL && home[0] != '\0') {
        return home;
    }
    struct passwd *pw = getpwuid(getuid());
    return pw != NULL ? pw->pw_dir : NULL;
}

/* dir + "/" + name, without doubling the slash; 0 on success. */
static int join(char *out, size_t cap, const char *dir, size_t dir_len, const char *name) {
    if (dir_len == 0) {
        return -1;
    }
    while (dir_len > 1 && dir[dir_len - 1] == '/') {
        dir_len--;
    }
    const char *sep = dir[dir_len - 1] == '/' ? "" : "/";
    int n = snprintf(out, cap, "%.*s%s%s", (int)dir_len, dir, sep, name);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int credctl_socket_path(char *path, size_t path_cap) {
    char home_buf[4096];
    const char *configured = getenv("CREDCTL_HOME");
    const char *home;
    if (configured != NULL && configured[0] != '\0') {
        home = configured;
        /* Like Python's expanduser: a leading "~" or "~/" is the user's home;
         * "~name" is rare enough to leave to the CLI. */
        if (configured[0] == '~') {
            if (configured[1] != '\0' && configured[1] != '/') {
                return CREDCTL_FAST_NO_HOME;
            }
            const char *user = user_home();
            if (user == NULL ||
                join(home_buf, sizeof home_buf, user, strlen(user), configured + 1 +
                     (configured[1] == '/')) != 0) {
                return CREDCTL_FAST_NO_HOME;
            }
            home = home_buf;
        }
    } else {
        const char *user = user_home();
        if (user == NULL || join(home_buf, sizeof home_buf, user, strlen(user), ".credctl") != 0) {
            return CREDCTL_FAST_NO_HOME;
        }
        home = home_buf;
    }
    if (join(path, path_cap, home, strlen(home), "daemon.sock") != 0) {
        return CREDCTL_FAST_NO_HOME;
    }
    return CREDCTL_FAST_OK;
}

int credctl_fast_auth(int argc, char **argv, char *body, size_t body_cap, size_t *body_len) {
    char target[128];
    int rc = credctl_fast_auth_target(argc, argv, target, sizeof target);
    if (rc != CREDCTL_FAST_OK) {
        return rc;
    }
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (credctl_socket_path(path, sizeof path) != CREDCTL_FAST_OK) {
        return CREDCTL_FAST_NO_HOME;
    }
    int status = 0;
    rc = credctl_http_get(path, target, CREDCTL_CONNECT_TIMEOUT_MS, CREDCTL_READ_TIMEOUT_MS,
                          &status, body, body_cap, body_len);
    if (rc != CREDCTL_HTTP_OK) {
        return rc;
    }
    return status == 200 ? CREDCTL_FAST_OK : CREDCTL_FAST_STATUS;
}

int credctl_fast_daemon_tried(int result) {
    switch (result) {
    case CREDCTL_FAST_STATUS:
    case CREDCTL_HTTP_ERR_CONNECT:
    case CREDCTL_HTTP_ERR_WRITE:
    case CREDCTL_HTTP_ERR_TIMEOUT:
    case CREDCTL_HTTP_ERR_READ:
    case CREDCTL_HTTP_ERR_PROTOCOL:
    case CREDCTL_HTTP_ERR_HEADERS_TOO_LARGE:
        return 1;
    default:
        /* Not asked (argv, environment, socket path), or an answer too large
         * for the fast path that the CLI can still fetch. */
        return 0;
    }
}
