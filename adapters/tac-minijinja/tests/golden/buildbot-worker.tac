# AUTOMATICALLY GENERATED - DO NOT MODIFY
# generated: Sun Nov  8 14:10:44 2026 on slavealloc.example.com

from buildbot_worker.bot import Worker
from twisted.application import service
from twisted.python.log import FileLogObserver, ILogObserver
from twisted.python.logfile import LogFile

buildmaster_host = 'bm01.build.example.com'
port = 9001
workername = 'tst-linux64-ec2-001'
passwd = "pass'word"
basedir = '/builds/slave'
keepalive = 600
umask = 0o002
maxdelay = 300
numcpus = None
allow_shutdown = 'file'
rotateLength = 1000000
maxRotatedFiles = 10

# `buildbot-worker start` refuses a directory whose buildbot.tac lacks this
# exact line.
application = service.Application('buildbot-worker')

# Relative to the directory `buildbot-worker start` runs twistd in (the one
# holding this file), where it watches the log to report the start.
logfile = LogFile.fromFullPath('twistd.log', rotateLength=rotateLength,
                               maxRotatedFiles=maxRotatedFiles)
application.setComponent(ILogObserver, FileLogObserver(logfile).emit)

s = Worker(buildmaster_host, port, workername, passwd, basedir, keepalive,
           umask=umask, maxdelay=maxdelay, numcpus=numcpus,
           allow_shutdown=allow_shutdown)
s.setServiceParent(application)
