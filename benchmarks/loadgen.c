/*
 * A closed-loop HTTP/1.1 load generator for a Unix socket (wrk does not speak
 * AF_UNIX). One thread, epoll, N clients, one request in flight per client.
 *
 *   loadgen --socket PATH --target /v1/... --clients N --requests MAX
 *           --duration SECONDS [--new-connection]
 *
 * Keep-alive mode connects every client before the clock starts and reuses
 * the connection; --new-connection times socket + connect + request +
 * response + close for every request (a full backlog, EAGAIN on a Unix
 * socket, is retried and counted, and the time spent waiting is included).
 * Stops at MAX completed requests or after SECONDS, whichever comes first,
 * and prints one JSON line with throughput and latency percentiles.
 * Built by benchmarks/loadgen.py with `cc -O2`; Linux only (epoll).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_CAP 65536
#define MAX_CLIENTS 4096

enum phase { IDLE, WAIT_CONNECT, WRITING, READING };

struct client {
    int fd;
    enum phase phase;
    uint64_t started_ns;
    size_t written;
    size_t received;
    char *buf;
};

static const char *socket_path;
static char request[1024];
static size_t request_len;
static int new_connection;
static struct sockaddr_un addr;

static uint64_t *latencies;
static long completed, errors, non_200, connect_retries, reconnects, max_requests, started_requests;
static int epfd;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void watch(struct client *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) != 0) {
        die("epoll_ctl");
    }
}

static void drop_connection(struct client *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* 0 connected, 1 backlog full (retry later), -1 error. */
static int open_connection(struct client *c) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket");
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(fd);
        if (err == EAGAIN || err == EINPROGRESS) {
            return 1;
        }
        errno = err;
        return -1;
    }
    c->fd = fd;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

static void start_request(struct client *c, uint64_t t) {
    started_requests++;
    c->started_ns = t;
    c->written = 0;
    c->received = 0;
    if (c->fd < 0) {
        int rc = open_connection(c);
        if (rc == 1) {
            connect_retries++;
            c->phase = WAIT_CONNECT;
            return;
        }
        if (rc < 0) {
            errors++;
            c->phase = IDLE;
            return;
        }
    } else {
        watch(c, EPOLLOUT, EPOLL_CTL_MOD);
    }
    c->phase = WRITING;
}

/* Length of a complete response in c->buf, 0 if incomplete, -1 if malformed. */
static long complete_length(struct client *c, int *status, int *closes) {
    c->buf[c->received] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL) {
        return c->received >= RESPONSE_CAP - 1 ? -1 : 0;
    }
    size_t header_len = (size_t)(end - c->buf) + 4;
    if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->received < 12) {
        return -1;
    }
    *status = atoi(c->buf + 9);
    *closes = 0;
    long content_length = -1;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            content_length = atol(line + 15);
        } else if (strncasecmp(line, "Connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ') {
                v++;
            }
            *closes = strncasecmp(v, "close", 5) == 0;
        }
    }
    if (content_length < 0) {
        return -1;
    }
    size_t total = header_len + (size_t)content_length;
    if (total >= RESPONSE_CAP) {
        return -1;
    }
    return c->received >= total ? (long)total : 0;
}

static void finish_request(struct client *c, uint64_t t, int ok, int status) {
    if (!ok) {
        errors++;
    } else {
        if (status != 200) {
            non_200++;
        }
        latencies[completed++] = t - c->started_ns;
    }
    c->phase = IDLE;
}

static void on_event(struct client *c, uint32_t events) {
    if (c->phase == WRITING) {
        ssize_t n = write(c->fd, request + c->written, request_len - c->written);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n <= 0) {
            drop_connection(c);
            finish_request(c, now_ns(), 0, 0);
            return;
        }
        c->written += (size_t)n;
        if (c->written == request_len) {
            c->phase = READING;
            watch(c, EPOLLIN, EPOLL_CTL_MOD);
        }
        return;
    }
    if (c->phase != READING) {
        return;
    }
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->received, RESPONSE_CAP - 1 - c->received);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n <= 0) {
            /* EOF or error before a complete response. */
            drop_connection(c);
            finish_request(c, now_ns(), 0, 0);
            return;
        }
        c->received += (size_t)n;
        int status = 0, closes = 0;
        long total = complete_length(c, &status, &closes);
        if (total < 0 || (total > 0 && (size_t)total != c->received)) {
            drop_connection(c);
            finish_request(c, now_ns(), 0, 0);
            return;
        }
        if (total > 0) {
            uint64_t t = now_ns();
            if (new_connection || closes) {
                if (!new_connection) {
                    reconnects++;
                }
                drop_connection(c);
            }
            finish_request(c, t, 1, status);
            return;
        }
        if (c->received >= RESPONSE_CAP - 1) {
            drop_connection(c);
            finish_request(c, now_ns(), 0, 0);
            return;
        }
    }
    (void)events;
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_ms(double q) {
    if (completed == 0) {
        return 0.0;
    }
    long rank = (long)(q * (double)completed + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > completed) {
        rank = completed;
    }
    return (double)latencies[rank - 1] / 1e6;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --socket PATH --target PATH --clients N --requests MAX "
            "--duration SECONDS [--new-connection]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *target = NULL;
    int clients = 0;
    double duration = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--new-connection") == 0) {
            new_connection = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--socket") == 0) {
            socket_path = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--target") == 0) {
            target = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--clients") == 0) {
            clients = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--requests") == 0) {
            max_requests = atol(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--duration") == 0) {
            duration = atof(argv[++i]);
        } else {
            usage();
        }
    }
    if (socket_path == NULL || target == NULL || clients < 1 || clients > MAX_CLIENTS ||
        max_requests < 1 || max_requests > 10000000 || duration <= 0 || duration > 600) {
        usage();
    }
    if (strlen(socket_path) >= sizeof addr.sun_path) {
        fprintf(stderr, "loadgen: socket path too long\n");
        return 2;
    }
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, socket_path);
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: credctl-loadgen\r\n%s\r\n",
                     target, new_connection ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof request) {
        fprintf(stderr, "loadgen: target too long\n");
        return 2;
    }
    request_len = (size_t)n;

    latencies = malloc(sizeof *latencies * (size_t)max_requests);
    struct client *pool = calloc((size_t)clients, sizeof *pool);
    if (latencies == NULL || pool == NULL) {
        die("malloc");
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        die("epoll_create1");
    }
    for (int i = 0; i < clients; i++) {
        pool[i].fd = -1;
        pool[i].phase = IDLE;
        pool[i].buf = malloc(RESPONSE_CAP);
        if (pool[i].buf == NULL) {
            die("malloc");
        }
        if (!new_connection) {
            /* Connect up front, blocking retries on a full backlog, off the clock. */
            int rc;
            int tries = 0;
            while ((rc = open_connection(&pool[i])) == 1 && tries++ < 5000) {
                usleep(1000);
            }
            if (rc != 0) {
                fprintf(stderr, "loadgen: cannot connect to %s: %s\n", socket_path,
                        rc < 0 ? strerror(errno) : "backlog full");
                return 1;
            }
            epoll_ctl(epfd, EPOLL_CTL_DEL, pool[i].fd, NULL);
            watch(&pool[i], EPOLLOUT, EPOLL_CTL_ADD);
        }
    }

    double cpu_before = cpu_seconds();
    uint64_t start = now_ns();
    uint64_t deadline = start + (uint64_t)(duration * 1e9);
    uint64_t last = start;
    struct epoll_event events[512];
    for (int i = 0; i < clients && started_requests < max_requests; i++) {
        start_request(&pool[i], now_ns());
    }
    for (;;) {
        int in_flight = 0;
        int waiting_connect = 0;
        for (int i = 0; i < clients; i++) {
            if (pool[i].phase != IDLE) {
                in_flight++;
            }
            if (pool[i].phase == WAIT_CONNECT) {
                waiting_connect++;
            }
        }
        if (in_flight == 0) {
            break;
        }
        int ready = epoll_wait(epfd, events, 512, waiting_connect ? 1 : 1000);
        if (ready < 0 && errno != EINTR) {
            die("epoll_wait");
        }
        uint64_t t = now_ns();
        for (int i = 0; i < ready; i++) {
            on_event(events[i].data.ptr, events[i].events);
        }
        int stopping = t >= deadline;
        for (int i = 0; i < clients; i++) {
            struct client *c = &pool[i];
            if (c->phase == WAIT_CONNECT) {
                if (stopping) {
                    errors++;
                    c->phase = IDLE;
                    continue;
                }
                int rc = open_connection(c);
                if (rc == 0) {
                    c->phase = WRITING;
                } else if (rc == 1) {
                    connect_retries++;
                } else {
                    errors++;
                    c->phase = IDLE;
                }
            }
            if (c->phase == IDLE && !stopping && started_requests < max_requests) {
                start_request(c, now_ns());
            }
        }
        if (ready > 0) {
            last = t;
        }
        if (t >= deadline + 5000000000ull) {
            /* Five seconds past the deadline: give up on whatever is still in flight. */
            for (int i = 0; i < clients; i++) {
                if (pool[i].phase != IDLE) {
                    errors++;
                    drop_connection(&pool[i]);
                    pool[i].phase = IDLE;
                }
            }
            break;
        }
    }
    double elapsed = (double)(last - start) / 1e9;
    double cpu = cpu_seconds() - cpu_before;
    for (int i = 0; i < clients; i++) {
        drop_connection(&pool[i]);
    }
    qsort(latencies, (size_t)completed, sizeof *latencies, compare_u64);
    double mean = 0;
    for (long i = 0; i < completed; i++) {
        mean += (double)latencies[i];
    }
    mean = completed ? mean / (double)completed / 1e6 : 0;
    printf("{\"mode\":\"%s\",\"clients\":%d,\"completed\":%ld,\"errors\":%ld,\"non_200\":%ld,"
           "\"connect_retries\":%ld,\"reconnects\":%ld,\"elapsed_s\":%.6f,\"rps\":%.1f,"
           "\"mean_ms\":%.4f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,"
           "\"loadgen_cpu_s\":%.4f}\n",
           new_connection ? "new-connection" : "keep-alive", clients, completed, errors, non_200,
           connect_retries, reconnects, elapsed, elapsed > 0 ? (double)completed / elapsed : 0.0,
           mean, percentile_ms(0.50), percentile_ms(0.90), percentile_ms(0.99),
           percentile_ms(1.0), cpu);
    return 0;
}
