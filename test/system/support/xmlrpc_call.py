#!/usr/bin/env python3
"""One XML-RPC call with Python's own xmlrpc.client, printed as JSON.

usage: xmlrpc_call.py tcp:PORT|unix:PATH|tls:PORT METHOD [JSON_ARGS]
prints {"result": ...} or {"fault": CODE, "message": TEXT}; exit 0 either way.
An argument {"base64": TEXT} is sent as an XML-RPC <base64> of TEXT's base64-decoded bytes.
Over TLS the server is checked against the CA file $XMLRPC_TLS_CA, and the client certificate is
$XMLRPC_TLS_CERT with its key $XMLRPC_TLS_KEY (none when unset); a connection that fails (a
refused handshake) prints {"error": CLASS, "message": TEXT}.
"""
import base64
import http.client
import json
import os
import socket
import ssl
import sys
import xmlrpc.client


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        return UnixConnection(self.unix_path)


def binary(arg):
    if isinstance(arg, dict) and list(arg) == ["base64"]:
        return xmlrpc.client.Binary(base64.b64decode(arg["base64"]))
    return arg


def main():
    target, method = sys.argv[1], sys.argv[2]
    args = [binary(a) for a in json.loads(sys.argv[3])] if len(sys.argv) > 3 else []
    if target.startswith("tls:"):
        context = ssl.create_default_context(cafile=os.environ["XMLRPC_TLS_CA"])
        if os.environ.get("XMLRPC_TLS_CERT"):
            context.load_cert_chain(os.environ["XMLRPC_TLS_CERT"], os.environ["XMLRPC_TLS_KEY"])
        proxy = xmlrpc.client.ServerProxy("https://127.0.0.1:%s/" % target[4:], context=context, allow_none=True)
    elif target.startswith("tcp:"):
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1:%s/" % target[4:], allow_none=True)
    else:
        proxy = xmlrpc.client.ServerProxy("http://localhost/", transport=UnixTransport(target[5:]), allow_none=True)
    try:
        result = getattr(proxy, method)(*args)
        print(json.dumps({"result": result}, default=str))
    except xmlrpc.client.Fault as fault:
        print(json.dumps({"fault": fault.faultCode, "message": fault.faultString}))
    except (OSError, http.client.HTTPException) as error:
        # ssl.SSLError and the resets of a refused TLS 1.3 handshake are OSErrors; over the
        # other transports a failed connection stays an error of this script.
        if not target.startswith("tls:"):
            raise
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))


main()
