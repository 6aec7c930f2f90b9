# This Source Code Form is subject to the terms of the Mozilla Public
# License, v. 2.0. If a copy of the MPL was not distributed with this
# file, You can obtain one at http://mozilla.org/MPL/2.0/.
"""Tests of slavealloc_workers against a throwaway HTTP server on loopback.

Standard library only, Python 3 and 2.7:
    python3 -m unittest -v test_slavealloc_workers   (from contrib/)
apps/e2e/tests/contrib.rs runs them under `cargo test`.
"""

from __future__ import print_function

import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import types
import unittest

try:  # Python 3
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from socketserver import ThreadingMixIn
except ImportError:  # Python 2.7
    from BaseHTTPServer import BaseHTTPRequestHandler, HTTPServer
    from SocketServer import ThreadingMixIn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slavealloc_workers  # noqa: E402

TOKEN = "bm09-master-secret-0123"
PASSWORD = u"w10-p@ss'word\"\\ \u00e9\n"

LIST = {
    "master": "bm09",
    "masterid": 9,
    "pool": "tests-win",
    "workers": [
        {"name": "t-w1064-ix-001", "password": PASSWORD, "slaveid": 35, "locked": False},
        {"name": "t-w1064-ix-002", "password": "other", "slaveid": 36, "locked": True},
    ],
    "missing_password": ["t-w1064-ix-012"],
}
PAIRS = [("t-w1064-ix-001", PASSWORD), ("t-w1064-ix-002", "other")]


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True


class FakeSlavealloc(object):
    """An HTTP server on 127.0.0.1 answering every GET with ``answer``
    (status, body, headers) and recording what it was asked."""

    def __init__(self):
        self.answer = (200, json.dumps(LIST).encode("utf-8"), {})
        self.requests = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Authorization")))
                status, body, headers = owner.answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        # A short poll interval: stop() waits for one.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02})
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def closed_port_url():
    """A loopback URL nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


class Base(unittest.TestCase):
    def setUp(self):
        # A proxy from the environment would swallow loopback requests.
        self.saved_env = dict(os.environ)
        for k in list(os.environ):
            if k.lower().endswith("_proxy"):
                del os.environ[k]
        self.dir = tempfile.mkdtemp()
        self.cache = os.path.join(self.dir, "workers.json")
        self.token_file = os.path.join(self.dir, "token")
        with open(self.token_file, "w") as f:
            f.write("  %s\n" % TOKEN)
        os.chmod(self.token_file, 0o600)
        self.logged = []
        self.saved_log = slavealloc_workers._log
        slavealloc_workers._log = self.logged.append
        self.slavealloc = FakeSlavealloc()

    def tearDown(self):
        self.slavealloc.stop()
        slavealloc_workers._log = self.saved_log
        shutil.rmtree(self.dir)
        os.environ.clear()
        os.environ.update(self.saved_env)

    def fetch(self, url=None, **kwargs):
        kwargs.setdefault("token_file", self.token_file)
        kwargs.setdefault("timeout", 5)
        return slavealloc_workers.fetch(url or self.slavealloc.url, "bm09", **kwargs)

    def log_text(self):
        return "\n".join(self.logged)


class GoodAnswers(Base):
    def test_the_pairs_come_back_with_the_token_sent_and_the_name_encoded(self):
        self.assertEqual(self.fetch(), PAIRS)
        path, authorization = self.slavealloc.requests[-1]
        self.assertEqual(path, "/api/masters/bm09/workers")
        self.assertEqual(authorization, "Bearer %s" % TOKEN, "the token file is stripped")
        self.assertIn("t-w1064-ix-012", self.log_text(), "slaves without a password are logged")
        slavealloc_workers.fetch(self.slavealloc.url + "/prefix/", u"bm 09/\u00e9", token="t")
        self.assertEqual(self.slavealloc.requests[-1][0], "/prefix/api/masters/bm%2009%2F%C3%A9/workers")
        slavealloc_workers.fetch(self.slavealloc.url, 9, token=" t ")
        self.assertEqual(self.slavealloc.requests[-1], ("/api/masters/9/workers", "Bearer t"))

    def test_workers_are_buildbot_workers_imported_only_when_asked_for(self):
        made = []

        class Worker(object):
            def __init__(self, name, password):
                made.append((name, password))
                self.workername = name

        plugins = types.ModuleType("buildbot.plugins")
        plugins.worker = types.SimpleNamespace(Worker=Worker) if hasattr(types, "SimpleNamespace") else None
        if plugins.worker is None:  # Python 2.7
            plugins.worker = types.ModuleType("worker")
            plugins.worker.Worker = Worker
        buildbot = types.ModuleType("buildbot")
        buildbot.plugins = plugins
        saved = dict(sys.modules)
        sys.modules["buildbot"] = buildbot
        sys.modules["buildbot.plugins"] = plugins
        try:
            ws = slavealloc_workers.workers(self.slavealloc.url, "bm09", token_file=self.token_file)
        finally:
            sys.modules.clear()
            sys.modules.update(saved)
        self.assertEqual(made, PAIRS)
        self.assertEqual([w.workername for w in ws], [n for n, _ in PAIRS])

    def test_arguments_that_can_never_work_are_refused(self):
        for bad in ["slavealloc.example.com", "ftp://x", None]:
            self.assertRaises(ValueError, slavealloc_workers.fetch, bad, "bm09", token="t")
        self.assertRaises(ValueError, self.fetch, token="t")  # and token_file
        self.assertRaises(ValueError, slavealloc_workers.fetch, self.slavealloc.url, "", token="t")


class Errors(Base):
    def refuse(self, status, error):
        body = json.dumps({"success": False, "error": error}).encode("utf-8")
        self.slavealloc.answer = (status, body, {})

    def test_an_error_answer_without_a_cache_is_raised_with_slavealloc_s_reason(self):
        self.refuse(403, "token \"viewer\" has the secrets scope")
        with self.assertRaises(slavealloc_workers.WorkerListError) as e:
            self.fetch()
        self.assertIn("403", str(e.exception))
        self.assertIn("secrets scope", str(e.exception))
        self.assertIn("/api/masters/bm09/workers", str(e.exception))

    def test_an_error_answer_with_a_cache_uses_the_cache_and_says_so(self):
        self.assertEqual(self.fetch(cache=self.cache), PAIRS)
        self.refuse(403, "token \"viewer\" has the secrets scope")
        self.logged[:] = []
        self.assertEqual(self.fetch(cache=self.cache), PAIRS)
        self.assertIn("403", self.log_text())
        self.assertIn("using the 2 workers cached in %s" % self.cache, self.log_text())

    def test_a_server_that_is_down_without_a_cache_is_raised(self):
        with self.assertRaises(slavealloc_workers.WorkerListError) as e:
            self.fetch(url=closed_port_url())
        self.assertIn("cannot reach slavealloc", str(e.exception))

    def test_a_server_that_is_down_with_a_cache_uses_the_cache(self):
        self.assertEqual(self.fetch(cache=self.cache), PAIRS)
        url = self.slavealloc.url
        self.slavealloc.stop()
        self.slavealloc = FakeSlavealloc()  # for tearDown
        self.logged[:] = []
        self.assertEqual(self.fetch(url=url, cache=self.cache), PAIRS)
        self.assertIn("cannot reach slavealloc", self.log_text())
        self.assertIn("cached in %s" % self.cache, self.log_text())

    def test_a_server_that_never_answers_times_out(self):
        # Connections complete in the listen backlog; nobody ever answers.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        try:
            url = "http://127.0.0.1:%d" % silent.getsockname()[1]
            with self.assertRaises(slavealloc_workers.WorkerListError) as e:
                self.fetch(url=url, timeout=0.3)
            self.assertIn("cannot reach slavealloc", str(e.exception))
        finally:
            silent.close()

    def test_a_missing_or_foreign_cache_is_no_excuse(self):
        self.refuse(500, "internal storage error")
        with self.assertRaises(slavealloc_workers.WorkerListError) as e:
            self.fetch(cache=self.cache)
        self.assertIn("500", str(e.exception))
        self.assertIn("unusable", str(e.exception))
        # A cache written for another master is not this master's list.
        self.slavealloc.answer = (200, json.dumps(LIST).encode("utf-8"), {})
        slavealloc_workers.fetch(self.slavealloc.url, "bm10", token="t", cache=self.cache)
        self.refuse(503, "database unavailable")
        with self.assertRaises(slavealloc_workers.WorkerListError) as e:
            self.fetch(cache=self.cache)
        self.assertIn("/api/masters/bm10/workers", str(e.exception))

    def test_malformed_answers_are_errors(self):
        for body in [b"<html>", b"[]", b"{}", json.dumps({"workers": [{"name": "x"}]}).encode("utf-8")]:
            self.slavealloc.answer = (200, body, {})
            self.assertRaises(slavealloc_workers.WorkerListError, self.fetch)

    def test_redirects_are_not_followed_and_the_token_stays_home(self):
        elsewhere = FakeSlavealloc()
        try:
            self.slavealloc.answer = (302, b"", {"Location": elsewhere.url + "/steal"})
            with self.assertRaises(slavealloc_workers.WorkerListError) as e:
                self.fetch()
            self.assertIn("redirect", str(e.exception))
            self.assertEqual(elsewhere.requests, [])
        finally:
            elsewhere.stop()

    def test_an_unreadable_or_empty_token_file_is_raised_even_with_a_cache(self):
        self.fetch(cache=self.cache)
        with open(self.token_file, "w") as f:
            f.write("\n")
        self.assertRaises(slavealloc_workers.WorkerListError, self.fetch, cache=self.cache)
        missing = os.path.join(self.dir, "nope")
        self.assertRaises(slavealloc_workers.WorkerListError, self.fetch, token_file=missing, cache=self.cache)


class Cache(Base):
    def test_the_cache_is_written_0600_whatever_the_umask_and_the_old_mode(self):
        with open(self.cache, "w") as f:
            f.write("old")
        os.chmod(self.cache, 0o644)
        old_umask = os.umask(0)
        try:
            self.fetch(cache=self.cache)
        finally:
            os.umask(old_umask)
        self.assertEqual(stat.S_IMODE(os.stat(self.cache).st_mode), 0o600)
        with open(self.cache) as f:
            cached = json.load(f)
        self.assertEqual(cached["format"], "slavealloc-workers-cache")
        self.assertEqual(cached["answer"]["workers"][0]["password"], PASSWORD)
        self.assertEqual(sorted(os.listdir(self.dir)), ["token", "workers.json"], "no temporary file left")

    def test_the_cache_is_replaced_atomically(self):
        self.fetch(cache=self.cache)
        with open(self.cache) as f:
            before = f.read()
        inode = os.stat(self.cache).st_ino
        # A write that fails half-way leaves the old cache whole and no
        # temporary file behind, and the fetched list is still returned.
        real_fsync = os.fsync

        def failing_fsync(fd):
            raise OSError(28, "No space left on device")

        os.fsync = failing_fsync
        try:
            self.assertEqual(self.fetch(cache=self.cache), PAIRS)
        finally:
            os.fsync = real_fsync
        with open(self.cache) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(os.listdir(self.dir)), ["token", "workers.json"])
        self.assertIn("cannot write the worker cache", self.log_text())
        # A successful write is a new file renamed over the old one: a
        # reader that opened the old one keeps reading it whole.
        reader = open(self.cache)
        try:
            self.fetch(cache=self.cache)
            self.assertNotEqual(os.stat(self.cache).st_ino, inode)
            self.assertEqual(reader.read(), before)
        finally:
            reader.close()


if __name__ == "__main__":
    unittest.main()
