# AUTOMATICALLY GENERATED - DO NOT MODIFY
# generated: Sun Nov  8 14:10:44 2026 on slavealloc.example.com

from twisted.application import service
from buildslave.bot import BuildSlave

# Masters with many builders hand a slave more remote references than
# Perspective Broker's default limit of 1024.
import twisted.spread.pb
twisted.spread.pb.MAX_BROKER_REFS = 4096

buildmaster_host = 'bm01.build.example.com'
port = 9001
slavename = 'panda-0123'
passwd = 'pw'
basedir = '/builds/panda-0123'
keepalive = None
usepty = False
umask = 0o002
maxdelay = 300
rotateLength = 1000000
maxRotatedFiles = 10

application = service.Application('buildslave')
try:
    from twisted.python.logfile import LogFile
    from twisted.python.log import ILogObserver, FileLogObserver
    logfile = LogFile.fromFullPath("twistd.log", rotateLength=rotateLength,
                                   maxRotatedFiles=maxRotatedFiles)
    application.setComponent(ILogObserver, FileLogObserver(logfile).emit)
except ImportError:
    pass  # Twisted before 8.2: keep twistd's own log
s = BuildSlave(buildmaster_host, port, slavename, passwd, basedir,
               keepalive, usepty, umask=umask, maxdelay=maxdelay,
               allow_shutdown="file")
s.setServiceParent(application)
