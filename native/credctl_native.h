/*
 * The whole C surface of credctl: the daemon client and fast path (portable
 * C, used by the Python entry through cffi and by the credctl-fast launcher)
 * and, on macOS only, the Secure Enclave shim.
 *
 * build_native.py feeds the declarations between the CFFI markers to cffi's
 * cdef, so this header is the one place they are written down.
 */
#ifndef CREDCTL_NATIVE_H
#define CREDCTL_NATIVE_H

#include <stddef.h>

/* CFFI-PORTABLE-BEGIN */
/* Timeouts of the daemon client: connecting to the socket, and the whole
 * response, which on a cache miss waits for a Touch ID prompt. */
#define CREDCTL_CONNECT_TIMEOUT_MS 2000
#define CREDCTL_READ_TIMEOUT_MS 65000

/* credctl_http_get results. */
#define CREDCTL_HTTP_OK 0                 /* a complete response: see *status */
#define CREDCTL_HTTP_ERR_ARGS -1          /* socket path too long for sun_path, or request too long */
#define CREDCTL_HTTP_ERR_CONNECT -2       /* no socket, nobody listening, or connect timed out */
#define CREDCTL_HTTP_ERR_WRITE -3         /* the request could not be sent */
#define CREDCTL_HTTP_ERR_TIMEOUT -4       /* no complete response within the read timeout */
#define CREDCTL_HTTP_ERR_READ -5          /* the connection failed while reading */
#define CREDCTL_HTTP_ERR_PROTOCOL -6      /* malformed response, or closed before the end of the body */
#define CREDCTL_HTTP_ERR_TOO_LARGE -7     /* the body does not fit the caller's buffer */
#define CREDCTL_HTTP_ERR_HEADERS_TOO_LARGE -8 /* status line and headers exceed 8 KiB */

/* credctl_fast_auth results besides the CREDCTL_HTTP_ERR_* codes. */
#define CREDCTL_FAST_OK 0
#define CREDCTL_FAST_NOT_HANDLED 1        /* not a plain auth call, or CREDCTL_NO_DAEMON is set */
#define CREDCTL_FAST_NO_HOME 2            /* no usable home directory or socket path */
#define CREDCTL_FAST_STATUS 3             /* the daemon answered with a status other than 200 */

/*
 * One HTTP/1.1 GET of `target` (e.g. "/v1/credentials/aws?format=env") over
 * the Unix socket at `socket_path`, with `Connection: close`.
 * On CREDCTL_HTTP_OK, *status holds the status code and body[0..*body_len)
 * the body. Never allocates; never truncates (CREDCTL_HTTP_ERR_TOO_LARGE).
 */
int credctl_http_get(const char *socket_path, const char *target,
                     int connect_timeout_ms, int read_timeout_ms,
                     int *status, char *body, size_t body_cap, size_t *body_len);

/*
 * The daemon request target for `credctl ARGV...` (argv without the program
 * name), written NUL-terminated into `target`. CREDCTL_FAST_OK when argv is an
 * `auth` call that the fast path serves, CREDCTL_FAST_NOT_HANDLED otherwise.
 * Reads CREDCTL_NO_DAEMON.
 */
int credctl_fast_auth_target(int argc, char **argv, char *target, size_t target_cap);

/*
 * 1 when `credctl ARGV...` is an `auth` call the fast path would serve as the
 * GCP executable-sourced format (`--provider gcp`, `--format executable` or
 * none), whatever CREDCTL_NO_DAEMON says; 0 otherwise. Its errors go to
 * stdout as a `"success":false` response, since google-auth reads stdout.
 */
int credctl_fast_is_gcp_executable(int argc, char **argv);

/* `$CREDCTL_HOME/daemon.sock`, else `~/.credctl/daemon.sock`.
 * CREDCTL_FAST_OK, or CREDCTL_FAST_NO_HOME when it cannot be formed. */
int credctl_socket_path(char *path, size_t path_cap);

/*
 * The fast path of `credctl ARGV...`: CREDCTL_FAST_OK when the daemon answered
 * 200, with the body (exactly what `credctl auth` prints) in body[0..*body_len);
 * any other value means "run the full CLI instead".
 */
int credctl_fast_auth(int argc, char **argv, char *body, size_t body_cap, size_t *body_len);

/* 1 when a credctl_fast_auth result means the daemon was asked and gave no
 * usable answer (not running, failing, timed out), so the full CLI should go
 * straight to the direct path instead of asking it again; 0 otherwise. */
int credctl_fast_daemon_tried(int result);
/* CFFI-PORTABLE-END */

/* CFFI-DARWIN-BEGIN */
#define CREDCTL_SE_OK 0
#define CREDCTL_SE_CANCELLED 1
#define CREDCTL_SE_NOT_FOUND 2
#define CREDCTL_SE_ERROR 3

/* policy: 0 none, 1 any (user presence), 2 fingerprint (current biometry set).
 * Every key also gets kSecAccessControlPrivateKeyUsage and is accessible only
 * when unlocked, on this device. The public key comes out as an X9.63 point
 * (65 bytes); *pub_len in: capacity, out: length. */
int credctl_se_create_key(const char *tag, int policy, unsigned char *pub_x963, size_t *pub_len,
                          char *err, size_t err_cap);
int credctl_se_copy_public_key(const char *tag, unsigned char *pub_x963, size_t *pub_len,
                               char *err, size_t err_cap);
/* Evaluates the key's own access control with `reason` shown in the prompt
 * (no prompt for a key without a user-presence policy), then signs `msg`
 * (ECDSA P-256 over SHA-256). *sig_len in: capacity, out: DER length. */
int credctl_se_sign(const char *tag, const char *reason, const unsigned char *msg, size_t msg_len,
                    unsigned char *sig_der, size_t *sig_len, char *err, size_t err_cap);
/* Deletes every key carrying `tag`; CREDCTL_SE_OK when there was none. */
int credctl_se_delete_keys(const char *tag, char *err, size_t err_cap);
/* CFFI-DARWIN-END */

#endif
