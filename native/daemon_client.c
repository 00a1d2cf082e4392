/*
 * A minimal HTTP/1.1 client over a Unix socket: one GET, `Connection: close`,
 * status and body out. Everything lives in the caller's buffers or on the
 * stack; every wait is bounded by a deadline on the monotonic clock.
 */
#define _GNU_SOURCE
#include "credctl_native.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A daemon that goes away mid-request must fail the request, not raise
 * SIGPIPE: the process has no business ignoring it globally (an ignored
 * disposition survives the launcher's exec), so each send says so itself. */
#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#elif defined(SO_NOSIGPIPE)
#define SEND_FLAGS 0 /* macOS: SO_NOSIGPIPE is set on the socket instead */
#else
#error "neither MSG_NOSIGNAL nor SO_NOSIGPIPE: no way to keep send() from raising SIGPIPE"
#endif

#define HEADER_CAP 8192
#define REQUEST_CAP 2048

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(long long deadline) {
    long long left = deadline - now_ms();
    if (left <= 0) {
        return 0;
    }
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Waits until `fd` is ready for `events`: 1 ready, 0 timed out, -1 error. */
static int wait_for(int fd, short events, long long deadline) {
    for (;;) {
        int left = remaining_ms(deadline);
        if (left == 0) {
            return 0;
        }
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int rc = poll(&pfd, 1, left);
        if (rc > 0) {
            return 1; /* errors and hang-ups surface in the following call */
        }
        if (rc == 0) {
            return 0;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

static int open_socket(void) {
#ifdef SOCK_CLOEXEC
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
#else
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        close(fd);
        return -1;
    }
#endif
#ifdef SO_NOSIGPIPE
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on) < 0) {
        close(fd);
        return -1;
    }
#endif
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_with_timeout(int fd, const struct sockaddr_un *addr, long long deadline) {
    for (;;) {
        if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0) {
            return 0;
        }
        if (errno == EAGAIN) {
            /* Linux: the listener's backlog is full and nothing was started;
             * try again shortly, until the deadline. */
            if (remaining_ms(deadline) == 0) {
                return -1;
            }
            poll(NULL, 0, 10);
            continue;
        }
        /* An interrupted connect goes on asynchronously, like one in
         * progress; calling connect again would fail with EALREADY. */
        if (errno != EINPROGRESS && errno != EINTR) {
            return -1;
        }
        if (wait_for(fd, POLLOUT, deadline) != 1) {
            return -1;
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            return -1;
        }
        return 0;
    }
}

static int send_all(int fd, const char *data, size_t len, long long deadline) {
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, data + sent, len - sent, SEND_FLAGS);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_for(fd, POLLOUT, deadline) != 1) {
                return -1;
            }
            continue;
        }
        return -1;
    }
    return 0;
}

/* One recv that waits for data: >0 bytes, 0 end of stream, or a
 * CREDCTL_HTTP_ERR_* code. */
static ssize_t recv_some(int fd, char *buf, size_t cap, long long deadline) {
    for (;;) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return CREDCTL_HTTP_ERR_READ;
        }
        int ready = wait_for(fd, POLLIN, deadline);
        if (ready == 0) {
            return CREDCTL_HTTP_ERR_TIMEOUT;
        }
        if (ready < 0) {
            return CREDCTL_HTTP_ERR_READ;
        }
    }
}

static int lower(int c) {
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Case-insensitive match of `name` at the start of the header line
 * [line, end), followed by ':'; returns the value with spaces trimmed. */
static int header_value(const char *line, const char *end, const char *name,
                        const char **value, const char **value_end) {
    size_t name_len = strlen(name);
    if ((size_t)(end - line) <= name_len || line[name_len] != ':') {
        return 0;
    }
    for (size_t i = 0; i < name_len; i++) {
        if (lower((unsigned char)line[i]) != name[i]) {
            return 0;
        }
    }
    const char *v = line + name_len + 1;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    const char *e = end;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) {
        e--;
    }
    *value = v;
    *value_end = e;
    return 1;
}

/* Parses the status line and the headers in [head, head_end), which ends just
 * before the blank line. *content_length is -1 when the header is absent. */
static int parse_head(const char *head, const char *head_end, int *status,
                      long long *content_length) {
    const char *line_end = memchr(head, '\r', (size_t)(head_end - head));
    if (line_end == NULL) {
        line_end = head_end;
    }
    /* "HTTP/1.x NNN reason" */
    if (line_end - head < 12 || memcmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ') {
        return CREDCTL_HTTP_ERR_PROTOCOL;
    }
    const char *code = head + 9;
    if (code[0] < '1' || code[0] > '5' || code[1] < '0' || code[1] > '9' || code[2] < '0' ||
        code[2] > '9' || (code + 3 < line_end && code[3] != ' ')) {
        return CREDCTL_HTTP_ERR_PROTOCOL;
    }
    *status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');

    *content_length = -1;
    const char *line = line_end;
    while (line < head_end) {
        if (head_end - line < 2 || line[0] != '\r' || line[1] != '\n') {
            return CREDCTL_HTTP_ERR_PROTOCOL;
        }
        line += 2;
        const char *end = memchr(line, '\r', (size_t)(head_end - line));
        if (end == NULL) {
            end = head_end;
        }
        const char *v;
        const char *v_end;
        if (header_value(line, end, "content-length", &v, &v_end)) {
            if (v == v_end) {
                return CREDCTL_HTTP_ERR_PROTOCOL;
            }
            long long n = 0;
            for (const char *p = v; p < v_end; p++) {
                if (*p < '0' || *p > '9' || n > 1000000000000LL) {
                    return CREDCTL_HTTP_ERR_PROTOCOL;
                }
                n = n * 10 + (*p - '0');
            }
            if (*content_length >= 0 && *content_length != n) {
                return CREDCTL_HTTP_ERR_PROTOCOL;
            }
            *content_length = n;
        } else if (header_value(line, end, "transfer-encoding", &v, &v_end)) {
            /* Not spoken here; the daemon always sends Content-Length. */
            return CREDCTL_HTTP_ERR_PROTOCOL;
        }
        line = end;
    }
    return CREDCTL_HTTP_OK;
}

static const char *find_blank_line(const char *buf, size_t len) {
    for (size_t i = 0; i + 3 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
            return buf + i;
        }
    }
    return NULL;
}

static int read_response(int fd, long long deadline, int *status, char *body, size_t body_cap,
                         size_t *body_len) {
    char head[HEADER_CAP];
    size_t have = 0;
    size_t scanned = 0;
    const char *blank = NULL;
    while (blank == NULL) {
        if (have == sizeof head) {
            return CREDCTL_HTTP_ERR_HEADERS_TOO_LARGE;
        }
        ssize_t n = recv_some(fd, head + have, sizeof head - have, deadline);
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return CREDCTL_HTTP_ERR_PROTOCOL;
        }
        have += (size_t)n;
        /* Rescan the last three bytes too: the blank line may straddle reads. */
        size_t from = scanned > 3 ? scanned - 3 : 0;
        blank = find_blank_line(head + from, have - from);
        scanned = have;
    }

    long long content_length;
    int rc = parse_head(head, blank, status, &content_length);
    if (rc != CREDCTL_HTTP_OK) {
        return rc;
    }

    const char *extra = blank + 4;
    size_t extra_len = (size_t)(head + have - extra);
    if (content_length >= 0) {
        if ((unsigned long long)content_length > body_cap) {
            return CREDCTL_HTTP_ERR_TOO_LARGE;
        }
        size_t want = (size_t)content_length;
        size_t got = extra_len < want ? extra_len : want;
        memcpy(body, extra, got);
        while (got < want) {
            ssize_t n = recv_some(fd, body + got, want - got, deadline);
            if (n < 0) {
                return (int)n;
            }
            if (n == 0) {
                return CREDCTL_HTTP_ERR_PROTOCOL;
            }
            got += (size_t)n;
        }
        *body_len = got;
        return CREDCTL_HTTP_OK;
    }

    /* No Content-Length: the body runs to the end of the stream. */
    if (extra_len > body_cap) {
        return CREDCTL_HTTP_ERR_TOO_LARGE;
    }
    memcpy(body, extra, extra_len);
    size_t got = extra_len;
    for (;;) {
        char probe;
        char *dst = got < body_cap ? body + got : &probe;
        size_t cap = got < body_cap ? body_cap - got : 1;
        ssize_t n = recv_some(fd, dst, cap, deadline);
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            break;
        }
        if (dst == &probe) {
            return CREDCTL_HTTP_ERR_TOO_LARGE;
        }
        got += (size_t)n;
    }
    *body_len = got;
    return CREDCTL_HTTP_OK;
}

int credctl_http_get(const char *socket_path, const char *target, int connect_timeout_ms,
                     int read_timeout_ms, int *status, char *body, size_t body_cap,
                     size_t *body_len) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t path_len = strlen(socket_path);
    if (path_len == 0 || path_len >= sizeof addr.sun_path) {
        return CREDCTL_HTTP_ERR_ARGS;
    }
    memcpy(addr.sun_path, socket_path, path_len + 1);

    char request[REQUEST_CAP];
    int request_len = snprintf(request, sizeof request,
                               "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                               target);
    if (request_len < 0 || (size_t)request_len >= sizeof request) {
        return CREDCTL_HTTP_ERR_ARGS;
    }

    int fd = open_socket();
    if (fd < 0) {
        return CREDCTL_HTTP_ERR_CONNECT;
    }
    int rc;
    if (connect_with_timeout(fd, &addr, now_ms() + connect_timeout_ms) != 0) {
        rc = CREDCTL_HTTP_ERR_CONNECT;
    } else {
        long long deadline = now_ms() + read_timeout_ms;
        if (send_all(fd, request, (size_t)request_len, deadline) != 0) {
            rc = CREDCTL_HTTP_ERR_WRITE;
        } else {
            rc = read_response(fd, deadline, status, body, body_cap, body_len);
        }
    }
    close(fd);
    return rc;
}
