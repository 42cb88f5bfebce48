/*
 * peercred.node: who is at the other end of a connection, as the kernel knows it. The API server
 * uses it to know which Unix user is calling; nothing the caller sends can change the answer.
 *
 *   peerCredentials(fd: number) -> { pid: number, uid: number, gid: number }
 *
 * The credentials of the process at the other end of a connected Unix-domain socket, as the
 * kernel recorded them when that process called connect() (SO_PEERCRED). Throws an Error (with
 * .code = the errno name and .errno = its number when a system call failed) when the fd is not a
 * connected (not listening) Unix-domain socket whose peer credentials the kernel knows.
 *
 *   tcpSocketOwner(address: string, port: number, peerAddress: string, peerPort: number)
 *     -> { uid: number, inode: number, state: number } | null
 *
 * The TCP socket of this host whose own end is address:port and whose peer is
 * peerAddress:peerPort (IPv4, or IPv6 in its text forms), asked of the kernel by its exact four
 * parts over netlink (sock_diag, as ss(8) asks): the uid that owns it, its inode (0 when no
 * process holds it any more: a closed socket on its way out, or a TIME_WAIT entry, whose uid the
 * kernel reports as 0 whoever owned it) and its state (the kernel's TCP_* number). null when the
 * kernel knows no such socket. It is one hash lookup in the kernel, however many sockets the host
 * has, where /proc/net/tcp writes them all out. Throws a TypeError for an address that is not one,
 * an Error with .code for a failed system call.
 *
 * Built without node-gyp by native/build.sh against the headers of the node-api-headers package;
 * the napi_* symbols are resolved from the node binary when the addon is loaded.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_errno.h"

static napi_value set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) != napi_ok) return NULL;
  if (napi_set_named_property(env, object, key, v) != napi_ok) return NULL;
  return object;
}

/* Reads a call's `count` arguments into argv; throws a TypeError saying `missing` and returns 0
 * when there are fewer. */
static int take_arguments(napi_env env, napi_callback_info info, size_t count, napi_value *argv, const char *missing) {
  size_t argc = count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < count) {
    napi_throw_type_error(env, NULL, missing);
    return 0;
  }
  return 1;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!take_arguments(env, info, 1, argv, "peerCredentials(fd): fd is missing")) return NULL;
  napi_valuetype type;
  if (napi_typeof(env, argv[0], &type) != napi_ok) return NULL;
  double number = -1;
  if (type == napi_number && napi_get_value_double(env, argv[0], &number) != napi_ok) return NULL;
  if (type != napi_number || !(number >= 0 && number <= 2147483647.0) || (double)(int)number != number) {
    napi_throw_type_error(env, NULL, "peerCredentials(fd): fd must be a file descriptor (an integer >= 0)");
    return NULL;
  }
  int fd = (int)number;

  /* SO_PEERCRED answers for any socket, with made-up values (uid 65534) where the kernel has no
   * peer: refuse everything but a Unix-domain socket, and a peer without a recorded pid. */
  int domain = 0;
  socklen_t length = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) {
    throw_errno(env, "getsockopt(SO_DOMAIN)", fd, errno);
    return NULL;
  }
  if (domain != AF_UNIX) {
    char message[128];
    snprintf(message, sizeof message, "fd %d is not a Unix-domain socket (address family %d)", fd, domain);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  /* A listening socket answers with the credentials of whoever called listen(): ours. */
  int listening = 0;
  length = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0) {
    throw_errno(env, "getsockopt(SO_ACCEPTCONN)", fd, errno);
    return NULL;
  }
  if (listening) {
    char message[128];
    snprintf(message, sizeof message, "fd %d is a listening socket, not a connection", fd);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  struct ucred cred;
  memset(&cred, 0, sizeof cred);
  length = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    throw_errno(env, "getsockopt(SO_PEERCRED)", fd, errno);
    return NULL;
  }
  if (length != sizeof cred || cred.pid <= 0) {
    /* Not connected, or the peer lives in a pid namespace we cannot see into. */
    char message[160];
    snprintf(message, sizeof message, "fd %d: the kernel has no credentials of a peer process (not connected?)", fd);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (set_number(env, result, "pid", (double)cred.pid) == NULL ||
      set_number(env, result, "uid", (double)cred.uid) == NULL ||
      set_number(env, result, "gid", (double)cred.gid) == NULL)
    return NULL;
  return result;
}

/* One end of a TCP connection, parsed from its text form. */
struct endpoint {
  int family; /* AF_INET or AF_INET6 */
  uint32_t address[4]; /* network order, as inet_diag_sockid holds it */
  uint16_t port;
};

/* Reads argv[at] (an address) and argv[at + 1] (a port) into *end; throws a TypeError and
 * returns 0 when either is not one. */
static int read_endpoint(napi_env env, napi_value *argv, size_t at, const char *what, struct endpoint *end) {
  char text[INET6_ADDRSTRLEN + 1];
  size_t length = 0;
  char message[160];
  napi_valuetype type;
  if (napi_typeof(env, argv[at], &type) != napi_ok) return 0;
  if (type != napi_string || napi_get_value_string_utf8(env, argv[at], text, sizeof text, &length) != napi_ok ||
      length >= sizeof text - 1) {
    snprintf(message, sizeof message, "tcpSocketOwner: the %s address must be an IPv4 or IPv6 address", what);
    napi_throw_type_error(env, NULL, message);
    return 0;
  }
  memset(end, 0, sizeof *end);
  if (inet_pton(AF_INET, text, end->address) == 1) {
    end->family = AF_INET;
  } else if (inet_pton(AF_INET6, text, end->address) == 1) {
    end->family = AF_INET6;
  } else {
    snprintf(message, sizeof message, "tcpSocketOwner: the %s address \"%s\" is not an IPv4 or IPv6 address", what, text);
    napi_throw_type_error(env, NULL, message);
    return 0;
  }
  double port = -1;
  if (napi_typeof(env, argv[at + 1], &type) != napi_ok) return 0;
  if (type == napi_number && napi_get_value_double(env, argv[at + 1], &port) != napi_ok) return 0;
  if (type != napi_number || !(port >= 0 && port <= 65535) || (double)(int)port != port) {
    snprintf(message, sizeof message, "tcpSocketOwner: the %s port must be an integer from 0 to 65535", what);
    napi_throw_type_error(env, NULL, message);
    return 0;
  }
  end->port = (uint16_t)port;
  return 1;
}

static napi_value tcp_socket_owner(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!take_arguments(env, info, 4, argv, "tcpSocketOwner(address, port, peerAddress, peerPort): arguments are missing"))
    return NULL;
  struct endpoint own, peer;
  if (!read_endpoint(env, argv, 0, "socket's", &own) || !read_endpoint(env, argv, 2, "peer's", &peer)) return NULL;
  if (own.family != peer.family) {
    napi_throw_type_error(env, NULL, "tcpSocketOwner: the two addresses are of different families (IPv4 and IPv6)");
    return NULL;
  }

  struct {
    struct nlmsghdr header;
    struct inet_diag_req_v2 request;
  } message;
  memset(&message, 0, sizeof message);
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST; /* one socket, found by its id: not a dump */
  message.header.nlmsg_seq = 1;
  message.request.sdiag_family = (uint8_t)own.family;
  message.request.sdiag_protocol = IPPROTO_TCP;
  message.request.idiag_states = ~0U;
  message.request.id.idiag_sport = htons(own.port);
  message.request.id.idiag_dport = htons(peer.port);
  memcpy(message.request.id.idiag_src, own.address, sizeof own.address);
  memcpy(message.request.id.idiag_dst, peer.address, sizeof peer.address);
  message.request.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  message.request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) {
    throw_errno(env, "socket(AF_NETLINK, NETLINK_SOCK_DIAG)", -1, errno);
    return NULL;
  }
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) != (ssize_t)sizeof message) {
    int err = errno;
    close(fd);
    throw_errno(env, "sendto(sock_diag request)", -1, err);
    return NULL;
  }
  /* The kernel answers a request for one socket before sendto returns: never wait for it. */
  union {
    struct nlmsghdr header;
    char bytes[8192];
  } answer;
  ssize_t received;
  do received = recv(fd, &answer, sizeof answer, MSG_DONTWAIT);
  while (received < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (received < 0) {
    throw_errno(env, "recv(sock_diag answer)", -1, err);
    return NULL;
  }

  for (struct nlmsghdr *h = &answer.header; NLMSG_OK(h, (size_t)received); h = NLMSG_NEXT(h, received)) {
    if (h->nlmsg_seq != 1) continue;
    if (h->nlmsg_type == NLMSG_ERROR) {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) break;
      int error = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
      if (error == ENOENT) {
        napi_value none;
        if (napi_get_null(env, &none) != napi_ok) return NULL;
        return none;
      }
      throw_errno(env, "sock_diag lookup", -1, error);
      return NULL;
    }
    if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
      const struct inet_diag_msg *found = NLMSG_DATA(h);
      napi_value result;
      if (napi_create_object(env, &result) != napi_ok) return NULL;
      if (set_number(env, result, "uid", (double)found->idiag_uid) == NULL ||
          set_number(env, result, "inode", (double)found->idiag_inode) == NULL ||
          set_number(env, result, "state", (double)found->idiag_state) == NULL)
        return NULL;
      return result;
    }
  }
  napi_throw_error(env, NULL, "sock_diag lookup: the kernel's answer held no socket and no error");
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "tcpSocketOwner", NAPI_AUTO_LENGTH, tcp_socket_owner, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "tcpSocketOwner", fn) != napi_ok) return NULL;
  return exports;
}
