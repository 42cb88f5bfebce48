#!/usr/bin/env python3
"""Python's own xmlrpc.client marshaller and unmarshaller, for the codec's tests.

usage: xmlrpc_marshal.py dumps   stdin: JSON {"method": NAME, "params": [...]} with tagged values
       xmlrpc_marshal.py loads   stdin: a methodResponse; prints the result or fault as tagged JSON
Tagged values: {"$bytes": base64}, {"$date": "YYYYMMDDTHH:MM:SS"}, {"$double": number}.
"""
import base64
import json
import sys
import xmlrpc.client


def untag(v):
    if isinstance(v, dict):
        if "$bytes" in v:
            return xmlrpc.client.Binary(base64.b64decode(v["$bytes"]))
        if "$date" in v:
            return xmlrpc.client.DateTime(v["$date"])
        if "$double" in v:
            return float(v["$double"])
        return {k: untag(x) for k, x in v.items()}
    if isinstance(v, list):
        return [untag(x) for x in v]
    return v


def tag(v):
    if isinstance(v, xmlrpc.client.Binary):
        return {"$bytes": base64.b64encode(v.data).decode()}
    if isinstance(v, xmlrpc.client.DateTime):
        return {"$date": v.value}
    if isinstance(v, float):
        return {"$double": v}
    if isinstance(v, dict):
        return {k: tag(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [tag(x) for x in v]
    return v


def main():
    if sys.argv[1] == "dumps":
        call = json.load(sys.stdin)
        sys.stdout.write(xmlrpc.client.dumps(tuple(untag(call["params"])), call["method"], allow_none=True))
        return
    data = sys.stdin.buffer.read()
    try:
        (result,), _ = xmlrpc.client.loads(data)
        print(json.dumps({"result": tag(result)}))
    except xmlrpc.client.Fault as fault:
        print(json.dumps({"fault": fault.faultCode, "message": fault.faultString}))


main()
