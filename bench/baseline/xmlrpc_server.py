#!/usr/bin/env python3
"""Baseline for bench/api.ts: GetRSpec served as the original node manager served its API.

A ThreadingMixIn + SimpleXMLRPCServer with the standard request handler, whose protocol is
HTTP/1.0: one connection per call, a thread per connection, listen backlog 5.

usage: xmlrpc_server.py RSPECS_JSON     (a JSON object: sliver name -> rspec struct)
prints "port N" once listening; serves until stdin closes
"""
import json
import socketserver
import sys
import threading
from xmlrpc.server import SimpleXMLRPCServer


class APIServer_INET(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    with open(sys.argv[1]) as f:
        rspecs = json.load(f)

    def GetRSpec(name):
        return rspecs[name]

    server = APIServer_INET(('127.0.0.1', 0), logRequests=False, allow_none=True)
    server.register_function(GetRSpec)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print('port %d' % server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == '__main__':
    main()
