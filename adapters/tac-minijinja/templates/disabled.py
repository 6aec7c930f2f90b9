# This slave is disabled in slavealloc. The comment names Application('buildslave')
# and Application('buildbot-worker') so that `buildslave start` and
# `buildbot-worker start` accept this file and run it, which shows why nothing
# starts. Valid Python 2 and Python 3.
import sys
print("SLAVE DISABLED; NOT STARTING")
sys.exit(0)
