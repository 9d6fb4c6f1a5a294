#!/usr/bin/env python3
"""A small OpenAI-compatible embedding server for NeuroStash's tests.

Serves POST /v1/embeddings in OpenAI's request and response format, computed
by sentence-transformers from a local model folder (all-MiniLM-L6-v2 from
$NEUROSTASH_EMBED_MODEL_DIR), so the HTTP embedder is tested against a real
server and real vectors. Options make the faults a client must survive:

    PYTHONPATH=$NEUROSTASH_ST_PYTHONPATH HF_HUB_OFFLINE=1 \\
        python3 scripts/embedding_server.py --port 0 [--require-key KEY] \\
        [--fail-first N] [--delay-ms MS] [--dimensions-override D] ...

With --port 0 it binds a free port and prints the port number as the first
line on stdout. GET /stats answers what it received so far: the number of
embedding requests, the status of each, and the batch size of each request
it computed vectors for.

The model is loaded on the first request that needs vectors, so a server
that only answers faults starts at once and needs no torch.
"""

import argparse
import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Model:
    """sentence-transformers, loaded once, used by one request at a time."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.lock = threading.Lock()
        self.model = None

    def encode(self, texts):
        with self.lock:
            if self.model is None:
                from sentence_transformers import SentenceTransformer

                self.model = SentenceTransformer(self.model_dir, device="cpu")
            return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True).tolist()


class State:
    def __init__(self, options):
        self.options = options
        self.model = Model(options.model_dir)
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses = []
        self.batch_sizes = []

    def next_request(self):
        with self.lock:
            self.requests += 1
            return self.requests

    def record(self, status, batch_size=None):
        with self.lock:
            self.statuses.append(status)
            if batch_size is not None:
                self.batch_sizes.append(batch_size)

    def stats(self):
        with self.lock:
            return {
                "requests": self.requests,
                "statuses": list(self.statuses),
                "batch_sizes": list(self.batch_sizes),
            }


def error_body(message, kind, code=None):
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "neurostash-test-embeddings/1"

    def log_message(self, format, *args):
        if self.server.state.options.verbose:
            super().log_message(format, *args)

    def answer(self, status, body, headers=()):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (its timeout): nothing left to answer
            pass

    def do_GET(self):
        if self.path == "/stats":
            self.answer(200, self.server.state.stats())
        elif self.path == "/v1/models":
            name = self.server.state.options.model_name
            self.answer(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "local"}]})
        else:
            self.answer(404, error_body(f"no route GET {self.path}", "invalid_request_error"))

    def do_POST(self):
        state = self.server.state
        options = state.options
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/embeddings":
            self.answer(404, error_body(f"no route POST {self.path}", "invalid_request_error"))
            return
        number = state.next_request()
        status, body, headers, batch = self.embeddings(options, state, number, raw)
        state.record(status, batch)
        self.answer(status, body, headers)

    def embeddings(self, options, state, number, raw):
        """(status, body, headers, batch size computed or None)"""
        if options.delay_ms:
            time.sleep(options.delay_ms / 1000)
        if number <= options.fail_first:
            return 503, error_body("the model is loading, try again", "server_error"), [("Retry-After", "0")], None
        if options.require_key is not None:
            given = self.headers.get("Authorization", "")
            if given != f"Bearer {options.require_key}":
                # echoes the key as OpenAI's own message does, so that a
                # client is seen to keep it out of its errors
                shown = given.removeprefix("Bearer ")
                message = f"Incorrect API key provided: {shown}" if shown else "You didn't provide an API key"
                return 401, error_body(message, "invalid_request_error", "invalid_api_key"), [], None
        try:
            request = json.loads(raw)
        except ValueError as error:
            return 400, error_body(f"the body is not JSON: {error}", "invalid_request_error"), [], None
        if not isinstance(request, dict):
            return 400, error_body("the body is not a JSON object", "invalid_request_error"), [], None
        model = request.get("model")
        if model != options.model_name:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return 404, error_body(message, "invalid_request_error", "model_not_found"), [], None
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
            message = "'input' must be a string or a non-empty array of strings"
            return 400, error_body(message, "invalid_request_error"), [], None
        if len(texts) > options.max_batch:
            message = f"'input' holds {len(texts)} texts, more than the {options.max_batch} allowed"
            return 413, error_body(message, "invalid_request_error"), [], None
        encoding = request.get("encoding_format", "float")
        if encoding != "float":
            message = f"encoding_format {encoding!r} is not supported here, only 'float'"
            return 400, error_body(message, "invalid_request_error"), [], None
        dimensions = request.get("dimensions")
        native = 384
        if dimensions is not None and (not isinstance(dimensions, int) or not 1 <= dimensions <= native):
            message = f"dimensions must be an integer from 1 to {native}, not {dimensions!r}"
            return 400, error_body(message, "invalid_request_error"), [], None

        vectors = state.model.encode(texts)
        if dimensions is not None:
            # shortened as OpenAI's text-embedding-3 models do: cut, then
            # scaled back to unit length
            vectors = [unit(vector[:dimensions]) for vector in vectors]
        if options.dimensions_override is not None:
            size = options.dimensions_override
            vectors = [(vector + [0.0] * size)[:size] for vector in vectors]
        if options.scale != 1.0:
            vectors = [[x * options.scale for x in vector] for vector in vectors]
        data = [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)]
        if options.reverse_data:
            data.reverse()
        tokens = sum(len(text.split()) for text in texts)
        body = {
            "object": "list",
            "data": data,
            "model": options.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, body, [], len(texts)


def unit(vector):
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 binds a free port (printed on stdout)")
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("NEUROSTASH_EMBED_MODEL_DIR"),
        help="a sentence-transformers model folder (default $NEUROSTASH_EMBED_MODEL_DIR)",
    )
    parser.add_argument("--model-name", default="all-MiniLM-L6-v2", help="the model id served and answered")
    parser.add_argument("--require-key", help="answer 401 unless the request carries 'Authorization: Bearer KEY'")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N requests 503, Retry-After: 0")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait this long before answering each request")
    parser.add_argument(
        "--dimensions-override", type=int, help="answer vectors of this many dimensions (cut or zero-padded)"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every vector by this, as servers that do not normalise"
    )
    parser.add_argument(
        "--reverse-data", action="store_true", help="list the answer's vectors last first (each with its index)"
    )
    parser.add_argument("--max-batch", type=int, default=2048, help="answer 413 to requests with more texts")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    options = parser.parse_args()
    if not options.model_dir:
        parser.error("--model-dir or $NEUROSTASH_EMBED_MODEL_DIR is required")

    server = ThreadingHTTPServer((options.host, options.port), Handler)
    server.daemon_threads = True
    server.state = State(options)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
