#!/usr/bin/env python3
"""Baseline for bench/parse.ts: the original node manager's way of reading slices.xml.

An xml.parsers.expat state machine gathers each <slice> into a dict and keeps the dicts of the
slices that name this node, converting their values with int() as the 2006 code did.

usage: parse_expat.py FILE NODE_ID RUNS WARMUP
prints one JSON object: median_ms, min_ms, runs, slivers
"""
import json
import statistics
import sys
import time
import xml.parsers.expat


def parse(data, node_id):
    slivers = []
    state = {'slice': None, 'resource': None, 'text': None}

    def start(name, attrs):
        current = state['slice']
        if name == 'slice':
            state['slice'] = {
                'name': attrs.get('name'), 'id': attrs.get('id'), 'expiry': attrs.get('expiry'),
                'timestamp': None, 'nodes': [], 'users': [], 'keys': [], 'rspec': {},
            }
        elif current is None:
            return
        elif name == 'node':
            current['nodes'].append(attrs.get('id'))
        elif name == 'timestamp':
            current['timestamp'] = attrs.get('value')
        elif name == 'user':
            current['users'].append(attrs.get('person_id'))
        elif name == 'key':
            current['keys'].append((attrs.get('person_id'), attrs.get('value')))
        elif name == 'resource':
            state['resource'] = attrs.get('name')
        elif name == 'value' and state['resource'] is not None:
            state['text'] = []

    def end(name):
        current = state['slice']
        if current is None:
            return
        if name == 'value' and state['text'] is not None:
            current['rspec'][state['resource']] = ''.join(state['text'])
            state['text'] = None
        elif name == 'resource':
            state['resource'] = None
        elif name == 'slice':
            state['slice'] = None
            if str(node_id) not in current['nodes']:
                return
            users = set(current['users'])
            slivers.append({
                'name': current['name'],
                'id': int(current['id']),
                'expiry': int(current['expiry']) if current['expiry'] else None,
                'timestamp': int(current['timestamp'] or 0),
                'rspec': dict((k, int(v)) for k, v in current['rspec'].items()),
                'keys': [value for person, value in current['keys'] if person in users],
            })

    def text(data):
        if state['text'] is not None:
            state['text'].append(data)

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.Parse(data, True)
    return slivers


def main():
    path, node_id, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with open(path, 'rb') as f:
        data = f.read()
    for _ in range(warmup):
        parse(data, node_id)
    times = []
    slivers = []
    for _ in range(runs):
        started = time.perf_counter()
        slivers = parse(data, node_id)
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps({
        'median_ms': statistics.median(times), 'min_ms': min(times), 'runs': runs, 'slivers': len(slivers),
    }))


if __name__ == '__main__':
    main()
