# The end-to-end test's master, relocatable: the test copies this file and
# master.cfg into a fresh directory and runs `buildbot start --nodaemon DIR`.
import os

from twisted.application import service
from twisted.python.log import FileLogObserver, ILogObserver
from twisted.python.logfile import LogFile

from buildbot.master import BuildMaster

basedir = os.path.abspath(os.path.dirname(__file__))

# note: this line is matched against to check that this is a buildmaster
# directory; do not edit it.
application = service.Application('buildmaster')
logfile = LogFile.fromFullPath(os.path.join(basedir, "twistd.log"), rotateLength=10000000, maxRotatedFiles=2)
application.setComponent(ILogObserver, FileLogObserver(logfile).emit)

m = BuildMaster(basedir, 'master.cfg', None)
m.setServiceParent(application)
