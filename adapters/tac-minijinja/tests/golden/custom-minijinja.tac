# AUTOMATICALLY GENERATED - DO NOT MODIFY
# generated: Sun Nov  8 14:10:44 2026 on slavealloc.example.com

from twisted.application import service
from buildbot_worker.bot import Worker

buildmaster_host = 'bm01.build.example.com'
port = 9001
workername = 'tst-linux64-ec2-001'
passwd = "pass'word"
basedir = '/builds/slave'
logdir = '/builds/slave/logs'
high_port = True
application = service.Application('buildbot-worker')
s = Worker(buildmaster_host, port, workername, passwd, basedir, 600)
s.setServiceParent(application)
