"""Runs a tac against stand-ins for twisted, buildslave and buildbot_worker;
runs under Python 2.7 and 3.

Reads the tac's source from stdin, executes it as twistd does (a fresh
namespace with __file__), and prints JSON: every stand-in constructed or
called, in order, with its arguments, and pb.MAX_BROKER_REFS afterwards.
"""
import json
import sys
import types

events = []


def module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, mod)
    return mod


class Recorded(object):
    def __init__(self, *args, **kwargs):
        events.append({"new": type(self).__name__, "args": list(args), "kwargs": kwargs})

    def setServiceParent(self, parent):
        events.append({"call": type(self).__name__ + ".setServiceParent", "args": [parent]})


class Application(Recorded):
    def setComponent(self, interface, component):
        events.append({"call": "Application.setComponent", "args": [interface, component]})


class LogFile(Recorded):
    @classmethod
    def fromFullPath(cls, path, **kwargs):
        events.append({"call": "LogFile.fromFullPath", "args": [path], "kwargs": kwargs})
        return cls.__new__(cls)


class FileLogObserver(Recorded):
    def emit(self, event):
        pass


class BuildSlave(Recorded):
    pass


class Worker(Recorded):
    pass


class Idleizer(Recorded):
    pass


for package in ["twisted", "twisted.application", "twisted.python", "twisted.spread", "buildslave",
                "buildbot_worker"]:
    module(package)
module("twisted.application.service", Application=Application)
module("twisted.python.logfile", LogFile=LogFile)
module("twisted.python.log", ILogObserver="ILogObserver", FileLogObserver=FileLogObserver)
pb = module("twisted.spread.pb", MAX_BROKER_REFS=1024)
module("buildslave.bot", BuildSlave=BuildSlave)
module("buildslave.idleizer", Idleizer=Idleizer)
module("buildbot_worker.bot", Worker=Worker)

source = sys.stdin.read()
namespace = {"__file__": "/nonexistent/buildbot.tac", "__name__": "__builtin__"}
exec(compile(source.encode("ascii"), "buildbot.tac", "exec"), namespace)


def plain(value):
    if isinstance(value, Recorded):
        return "<%s>" % type(value).__name__
    if callable(value):
        return "<%s>" % getattr(value, "__name__", "callable")
    raise TypeError(repr(value))


json.dump({"events": events, "max_broker_refs": pb.MAX_BROKER_REFS}, sys.stdout, default=plain)
