#!/usr/bin/env python3
"""A local stand-in for EventBridge's PutEvents (it has no emulator): answers the AWS SDK's real
requests (JSON 1.1, X-Amz-Target AWSEvents.PutEvents) with every entry accepted, and appends each
entry as one JSON line to LOG.

usage: putevents_recorder.py HOST PORT LOG   (runs until killed)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("X-Amz-Target") != "AWSEvents.PutEvents":
            return self.answer(400, {"__type": "ValidationException", "message": "not PutEvents"})
        entries = json.loads(body).get("Entries", [])
        with open(sys.argv[3], "a") as log:
            for entry in entries:
                log.write(json.dumps(entry) + "\n")
        self.answer(200, {"FailedEntryCount": 0,
                          "Entries": [{"EventId": f"local-{i}"} for i in range(len(entries))]})

    def answer(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Recorder).serve_forever()
