/*
 * forward_api_calls: the login shell of a delegate account. A remote caller runs
 *
 *     ssh delegate@node < request.xml
 *
 * and this program sends the one XML-RPC request it reads from stdin to the node manager's API
 * on its Unix socket, where the daemon learns the caller's uid from SO_PEERCRED, and writes the
 * XML-RPC response to stdout. Whatever goes wrong on the way is reported the same way, as an
 * XML-RPC fault on stdout, so that the remote caller's XML-RPC client always has something to
 * parse; a one-line message also goes to stderr for people.
 *
 * The original PlanetLab shell copied stdin to the socket in one 4 KiB read and silently lost the
 * rest; this one reads the whole request (up to MAX_REQUEST_BYTES) or refuses it with a fault.
 *
 * Limits, all documented in --help:
 *   - request: at most MAX_REQUEST_BYTES (16 MiB = 16777216 bytes); a larger one is refused with
 *     fault 102 and exit status 2, without contacting the daemon;
 *   - response: at most MAX_RESPONSE_BYTES (64 MiB), HTTP header included (fault 504);
 *   - time: one deadline, NODEMGR_API_TIMEOUT seconds (default 30), covers reading stdin,
 *     connecting, sending and reading the answer (fault 502).
 *
 * sshd starts a login shell as "-forward_api_calls" or with "-c COMMAND": every argument except
 * --help is ignored, so that no remote command line can change what this program does.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef API_SOCKET_PATH
#define API_SOCKET_PATH "/run/nodemgr/api.sock"
#endif

/* The largest request forwarded: 16 MiB, the daemon's own default limit (api_max_request_bytes).
 * Most requests are a few hundred bytes and a ticket a few KiB, but the authority's delegate
 * pushes whole slices.xml documents (DeliverSlices), which reach megabytes on a full node. */
#define MAX_REQUEST_BYTES (16 * 1024 * 1024)
/* The largest answer accepted, HTTP header included: 64 MiB (DumpDatabase of a very full node). */
#define MAX_RESPONSE_BYTES (64 * 1024 * 1024)
#define DEFAULT_TIMEOUT_SECONDS 30
#define MAX_TIMEOUT_SECONDS 86400

/* Fault codes. 102 is the API's own "invalid argument"; the 50x codes are this program's. */
#define FAULT_REQUEST_TOO_LARGE 102 /* the request on stdin exceeds MAX_REQUEST_BYTES */
#define FAULT_HTTP_STATUS 500       /* the daemon answered with an HTTP status other than 200 */
#define FAULT_UNREACHABLE 501       /* no connection to the API socket (daemon not running?) */
#define FAULT_TIMEOUT 502           /* the deadline passed */
#define FAULT_BAD_RESPONSE 503      /* the connection failed, or the answer is not a usable HTTP response */
#define FAULT_RESPONSE_TOO_LARGE 504 /* the answer exceeds MAX_RESPONSE_BYTES */
#define FAULT_LOCAL 505             /* stdin could not be read, or memory ran out */

#define EXIT_FAULT 1
#define EXIT_REQUEST_TOO_LARGE 2

static const char *program = "forward_api_calls";
static int timeout_seconds = DEFAULT_TIMEOUT_SECONDS;
static struct timespec deadline;
static const char *socket_path = API_SOCKET_PATH;

/* ---- output ---------------------------------------------------------------------------------- */

/* Writes all of data; stdout may be a pipe that takes it piecewise, or even non-blocking. */
static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) return -1;
        continue;
      }
      return -1;
    }
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Length of the valid UTF-8 sequence at s (at most `left` bytes), or 0 if there is none: text in a
 * fault (a path from the environment, a status line from the daemon) may be any bytes, and the
 * fault must stay well-formed XML. */
static size_t utf8_sequence(const unsigned char *s, size_t left) {
  unsigned char c = s[0];
  size_t need;
  unsigned char low = 0x80, high = 0xBF; /* allowed range of the second byte */
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) low = 0xA0;  /* overlong */
    if (c == 0xED) high = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) low = 0x90;  /* overlong */
    if (c == 0xF4) high = 0x8F; /* beyond U+10FFFF */
  } else
    return 0;
  if (left < need + 1) return 0;
  if (s[1] < low || s[1] > high) return 0;
  for (size_t i = 2; i <= need; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return need + 1;
}

/* Appends text to out (of size `size`, kept NUL-terminated) escaped for XML character data:
 * &, < and > as entities, control characters and invalid UTF-8 as '?'. */
static void append_xml_text(char *out, size_t size, const char *text) {
  size_t used = strlen(out);
  const unsigned char *s = (const unsigned char *)text;
  size_t left = strlen(text);
  while (left > 0) {
    const char *piece;
    char single[5];
    size_t take = 1;
    if (*s == '&') piece = "&amp;";
    else if (*s == '<') piece = "&lt;";
    else if (*s == '>') piece = "&gt;";
    else if ((*s < 0x20 && *s != '\t' && *s != '\n' && *s != '\r') || *s == 0x7F) piece = "?";
    else {
      take = utf8_sequence(s, left);
      if (take == 0) {
        take = 1;
        piece = "?";
      } else {
        memcpy(single, s, take);
        single[take] = '\0';
        piece = single;
      }
    }
    size_t n = strlen(piece);
    if (used + n >= size) break;
    memcpy(out + used, piece, n + 1);
    used += n;
    s += take;
    left -= take;
  }
}

/* Writes an XML-RPC fault with the formatted message to stdout (and the message to stderr) and
 * exits with `status`. */
__attribute__((format(printf, 3, 4), noreturn)) static void fail(int code, int status, const char *format, ...) {
  char message[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);

  char xml[8192];
  snprintf(xml, sizeof xml,
           "<?xml version=\"1.0\"?>\n"
           "<methodResponse><fault><value><struct>"
           "<member><name>faultCode</name><value><int>%d</int></value></member>"
           "<member><name>faultString</name><value><string>",
           code);
  append_xml_text(xml, sizeof xml - 128, message);
  strcat(xml, "</string></value></member></struct></value></fault></methodResponse>\n");
  if (write_all(STDOUT_FILENO, xml, strlen(xml)) != 0) {
    /* nobody to tell but stderr */
  }
  /* no terminal control sequences from a status line or a path onto the user's terminal */
  for (char *c = message; *c != '\0'; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7F) *c = '?';
  dprintf(STDERR_FILENO, "%s: %s\n", program, message);
  exit(status);
}

static void print_help(void) {
  printf("Usage: %s [--help]\n"
         "\n"
         "Login shell of a node manager delegate account. Reads one XML-RPC request (the whole\n"
         "XML document) from standard input until end of file, sends it to the node manager's API\n"
         "on its Unix socket and writes the XML-RPC response to standard output. Arguments other\n"
         "than --help (such as sshd's -c COMMAND) are ignored.\n"
         "\n"
         "Limits:\n"
         "  request   at most %d bytes (16 MiB); a larger one is refused without contacting\n"
         "            the node manager\n"
         "  response  at most %d bytes (64 MiB), HTTP header included\n"
         "  time      one deadline for reading the request, connecting and reading the answer\n"
         "\n"
         "Environment:\n"
         "  NODEMGR_API_SOCKET   path of the API socket (default %s)\n"
         "  NODEMGR_API_TIMEOUT  the deadline in whole seconds, 1 to %d (default %d);\n"
         "                       another value is ignored with a warning\n"
         "\n"
         "Every failure is written to standard output as an XML-RPC fault (and to standard error\n"
         "as a line of text):\n"
         "  %d  request too large: more than %d bytes (exit status 2)\n"
         "  %d  the node manager answered with an HTTP status other than 200\n"
         "  %d  cannot reach the node manager at PATH (is it running?)\n"
         "  %d  timed out after N s\n"
         "  %d  the connection failed, or the answer was not a usable HTTP response\n"
         "  %d  response too large: more than %d bytes\n"
         "  %d  the request could not be read from standard input, or memory ran out\n"
         "\n"
         "Exit status: 0 the daemon's answer was written (it may itself be a fault of the API),\n"
         "1 a fault of this program was written, 2 the request was too large.\n",
         program, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, API_SOCKET_PATH, MAX_TIMEOUT_SECONDS,
         DEFAULT_TIMEOUT_SECONDS, FAULT_REQUEST_TOO_LARGE, MAX_REQUEST_BYTES, FAULT_HTTP_STATUS,
         FAULT_UNREACHABLE, FAULT_TIMEOUT, FAULT_BAD_RESPONSE, FAULT_RESPONSE_TOO_LARGE,
         MAX_RESPONSE_BYTES, FAULT_LOCAL);
}

/* ---- time ------------------------------------------------------------------------------------ */

static void read_timeout_from_environment(void) {
  const char *text = getenv("NODEMGR_API_TIMEOUT");
  if (text == NULL || *text == '\0') return;
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < 1 || value > MAX_TIMEOUT_SECONDS) {
    dprintf(STDERR_FILENO, "%s: ignoring NODEMGR_API_TIMEOUT=\"%s\": not a whole number of seconds from 1 to %d\n",
            program, text, MAX_TIMEOUT_SECONDS);
    return;
  }
  timeout_seconds = (int)value;
}

/* Milliseconds until the deadline, 0 once it has passed. */
static int remaining_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long long ms = (long long)(deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
  if (ms <= 0) return 0;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* at_socket: the step talks to the daemon, and the message names its socket. */
__attribute__((noreturn)) static void fail_timeout(const char *while_doing, int at_socket) {
  fail(FAULT_TIMEOUT, EXIT_FAULT, "timed out after %d s %s%s%s", timeout_seconds, while_doing,
       at_socket ? " at " : "", at_socket ? socket_path : "");
}

/* Waits until fd is ready for `events` or the deadline passes (a fault, no return). */
static void wait_for(int fd, short events, const char *while_doing, int at_socket) {
  for (;;) {
    int left = remaining_ms();
    if (left == 0) fail_timeout(while_doing, at_socket);
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, left);
    if (n > 0) return; /* ready, or an error/hangup that the next read or write reports */
    if (n == 0) fail_timeout(while_doing, at_socket);
    if (errno != EINTR) fail(FAULT_LOCAL, EXIT_FAULT, "poll: %s", strerror(errno));
  }
}

/* ---- request --------------------------------------------------------------------------------- */

/* Reads stdin to its end into a buffer of MAX_REQUEST_BYTES + 1 bytes: one byte more than allowed
 * is how a request that is too large is told from one that is exactly the limit. */
static char *read_request(size_t *length) {
  char *data = malloc(MAX_REQUEST_BYTES + 1);
  if (data == NULL) fail(FAULT_LOCAL, EXIT_FAULT, "out of memory");
  size_t used = 0;
  for (;;) {
    wait_for(STDIN_FILENO, POLLIN, "while reading the request from standard input", 0);
    ssize_t n = read(STDIN_FILENO, data + used, MAX_REQUEST_BYTES + 1 - used);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      fail(FAULT_LOCAL, EXIT_FAULT, "cannot read the request from standard input: %s", strerror(errno));
    }
    if (n == 0) break;
    used += (size_t)n;
    if (used > MAX_REQUEST_BYTES)
      fail(FAULT_REQUEST_TOO_LARGE, EXIT_REQUEST_TOO_LARGE, "request too large: more than %d bytes", MAX_REQUEST_BYTES);
  }
  *length = used;
  return data;
}

/* ---- connection ------------------------------------------------------------------------------ */

__attribute__((noreturn)) static void fail_unreachable(int err) {
  fail(FAULT_UNREACHABLE, EXIT_FAULT, "cannot reach the node manager at %s: %s", socket_path, strerror(err));
}

static int connect_to_api(void) {
  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  size_t path_length = strlen(socket_path);
  if (path_length >= sizeof address.sun_path) fail_unreachable(ENAMETOOLONG);
  memcpy(address.sun_path, socket_path, path_length + 1);

  /* Non-blocking, so that no step can outlast the deadline. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) fail_unreachable(errno);
  const char *while_connecting = "while connecting to the node manager";
  for (;;) {
    if (connect(fd, (const struct sockaddr *)&address, sizeof address) == 0) return fd;
    int err = errno;
    if (err == EISCONN) return fd;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      /* The daemon's listen backlog is full: try again shortly. */
      int left = remaining_ms();
      if (left == 0) fail_timeout(while_connecting, 1);
      poll(NULL, 0, left < 50 ? left : 50);
      continue;
    }
    if (err == EINPROGRESS || err == EALREADY) {
      wait_for(fd, POLLOUT, while_connecting, 1);
      int so_error = 0;
      socklen_t length = sizeof so_error;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) != 0) fail_unreachable(errno);
      if (so_error != 0) fail_unreachable(so_error);
      return fd;
    }
    fail_unreachable(err);
  }
}

/* Sends all of data; returns 0, or -1 when the daemon closed its end (it may have answered). */
static int send_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_for(fd, POLLOUT, "while sending the request to the node manager", 1);
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return -1;
      fail(FAULT_BAD_RESPONSE, EXIT_FAULT, "cannot send the request to the node manager at %s: %s", socket_path,
           strerror(errno));
    }
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* ---- response -------------------------------------------------------------------------------- */

struct response {
  char *data;
  size_t length, capacity;
  size_t body_start;       /* 0 until the end of the header has been seen */
  size_t scanned;          /* start of the first header line not yet looked at */
  long long content_length; /* -1 when the header has none */
};

static int equal_ignoring_case(const char *a, size_t a_length, const char *b) {
  return a_length == strlen(b) && strncasecmp(a, b, a_length) == 0;
}

__attribute__((noreturn)) static void fail_malformed(const char *what) {
  fail(FAULT_BAD_RESPONSE, EXIT_FAULT, "malformed answer from the node manager at %s: %s", socket_path, what);
}

/* Checks the status line and reads Content-Length once the whole header is in. */
static void parse_header(struct response *r) {
  const char *p = r->data;
  const char *end = r->data + r->body_start;
  const char *line_end = memchr(p, '\n', (size_t)(end - p));
  size_t status_length = (size_t)(line_end - p);
  if (status_length > 0 && p[status_length - 1] == '\r') status_length--;

  /* "HTTP/1.x NNN reason" */
  if (status_length < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ' ||
      p[9] < '0' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
      (status_length > 12 && p[12] != ' ')) {
    char shown[201];
    size_t n = status_length < 200 ? status_length : 200;
    memcpy(shown, p, n);
    shown[n] = '\0';
    fail(FAULT_BAD_RESPONSE, EXIT_FAULT, "malformed answer from the node manager at %s: status line \"%s\"",
         socket_path, shown);
  }
  if (memcmp(p + 9, "200", 3) != 0) {
    char shown[201];
    size_t n = status_length < 200 ? status_length : 200;
    memcpy(shown, p, n);
    shown[n] = '\0';
    fail(FAULT_HTTP_STATUS, EXIT_FAULT, "the node manager at %s answered \"%s\"", socket_path, shown);
  }

  for (p = line_end + 1; p < end; p = line_end + 1) {
    line_end = memchr(p, '\n', (size_t)(end - p));
    size_t length = (size_t)(line_end - p);
    if (length > 0 && p[length - 1] == '\r') length--;
    if (length == 0) break;
    const char *colon = memchr(p, ':', length);
    if (colon == NULL) fail_malformed("a header line without a colon");
    size_t name_length = (size_t)(colon - p);
    const char *value = colon + 1;
    const char *value_end = p + length;
    while (value < value_end && (*value == ' ' || *value == '\t')) value++;
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;

    if (equal_ignoring_case(p, name_length, "content-length")) {
      if (value == value_end) fail_malformed("an empty Content-Length");
      long long n = 0;
      for (const char *d = value; d < value_end; d++) {
        if (*d < '0' || *d > '9') fail_malformed("a Content-Length that is not a number");
        n = n * 10 + (*d - '0');
        if (n > MAX_RESPONSE_BYTES)
          fail(FAULT_RESPONSE_TOO_LARGE, EXIT_FAULT, "response too large: more than %d bytes", MAX_RESPONSE_BYTES);
      }
      if (r->content_length >= 0 && r->content_length != n) fail_malformed("two different Content-Lengths");
      r->content_length = n;
    } else if (equal_ignoring_case(p, name_length, "transfer-encoding")) {
      /* We asked in HTTP/1.0, which has no chunked encoding; passing chunks on would corrupt the XML. */
      if (!equal_ignoring_case(value, (size_t)(value_end - value), "identity"))
        fail_malformed("a Transfer-Encoding in answer to an HTTP/1.0 request");
    }
  }
  if (r->content_length > (long long)(MAX_RESPONSE_BYTES - r->body_start))
    fail(FAULT_RESPONSE_TOO_LARGE, EXIT_FAULT, "response too large: more than %d bytes", MAX_RESPONSE_BYTES);
}

/* Looks for the empty line that ends the header in the lines that arrived since the last call. */
static void find_header_end(struct response *r) {
  while (r->body_start == 0) {
    char *newline = memchr(r->data + r->scanned, '\n', r->length - r->scanned);
    if (newline == NULL) return;
    size_t line_length = (size_t)(newline - (r->data + r->scanned));
    int empty = line_length == 0 || (line_length == 1 && r->data[r->scanned] == '\r');
    if (empty && r->scanned > 0) {
      r->body_start = (size_t)(newline - r->data) + 1;
      parse_header(r);
    }
    r->scanned = (size_t)(newline - r->data) + 1;
  }
}

static void read_response(int fd, struct response *r, int request_sent) {
  const char *while_waiting = "while waiting for the answer of the node manager";
  for (;;) {
    if (r->body_start > 0 && r->content_length >= 0 &&
        r->length - r->body_start >= (unsigned long long)r->content_length)
      return;
    if (r->length == r->capacity) {
      size_t capacity = r->capacity == 0 ? 64 * 1024 : r->capacity * 2;
      if (capacity > MAX_RESPONSE_BYTES + 1) capacity = MAX_RESPONSE_BYTES + 1;
      char *data = realloc(r->data, capacity);
      if (data == NULL) fail(FAULT_LOCAL, EXIT_FAULT, "out of memory");
      r->data = data;
      r->capacity = capacity;
    }
    wait_for(fd, POLLIN, while_waiting, 1);
    ssize_t n = recv(fd, r->data + r->length, r->capacity - r->length, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      /* A daemon that answers before reading the whole request closes on unread data, which
       * resets the connection after its answer has been delivered. */
      if (errno == ECONNRESET && !request_sent) return;
      fail(FAULT_BAD_RESPONSE, EXIT_FAULT, "the connection to the node manager at %s failed: %s", socket_path,
           strerror(errno));
    }
    if (n == 0) return;
    r->length += (size_t)n;
    if (r->length > MAX_RESPONSE_BYTES)
      fail(FAULT_RESPONSE_TOO_LARGE, EXIT_FAULT, "response too large: more than %d bytes", MAX_RESPONSE_BYTES);
    find_header_end(r);
  }
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0) {
      print_help();
      return fflush(stdout) == 0 ? 0 : EXIT_FAULT;
    }
  }
  /* A reader of stdout that goes away is an error to report, not a reason to die silently. */
  signal(SIGPIPE, SIG_IGN);

  const char *path = getenv("NODEMGR_API_SOCKET");
  if (path != NULL && *path != '\0') socket_path = path;
  read_timeout_from_environment();
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeout_seconds;

  size_t request_length = 0;
  char *request = read_request(&request_length);

  int fd = connect_to_api();
  char header[256];
  int header_length = snprintf(header, sizeof header,
                               "POST /RPC2 HTTP/1.0\r\n"
                               "Host: localhost\r\n"
                               "Content-Type: text/xml\r\n"
                               "Content-Length: %zu\r\n"
                               "\r\n",
                               request_length);
  int request_sent = send_all(fd, header, (size_t)header_length) == 0 && send_all(fd, request, request_length) == 0;
  free(request);

  struct response response = {.content_length = -1};
  read_response(fd, &response, request_sent);
  close(fd);

  if (response.body_start == 0) {
    if (response.length == 0)
      fail(FAULT_BAD_RESPONSE, EXIT_FAULT, "the node manager at %s closed the connection without answering%s",
           socket_path, request_sent ? "" : " (before it had read the whole request)");
    fail_malformed("the connection was closed within the HTTP header");
  }
  size_t body_length = response.length - response.body_start;
  if (response.content_length >= 0) {
    if (body_length < (unsigned long long)response.content_length)
      fail(FAULT_BAD_RESPONSE, EXIT_FAULT,
           "truncated answer from the node manager at %s: %zu of %lld bytes", socket_path, body_length,
           response.content_length);
    body_length = (size_t)response.content_length; /* anything after it is not ours */
  }
  if (write_all(STDOUT_FILENO, response.data + response.body_start, body_length) != 0) {
    dprintf(STDERR_FILENO, "%s: cannot write the answer to standard output: %s\n", program, strerror(errno));
    return EXIT_FAULT;
  }
  free(response.data);
  return 0;
}
