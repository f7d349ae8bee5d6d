"""The commit path, in order: execute a committed block and write it (committer) on the commit
worker thread (pipeline), collect header signatures into a commit certificate (certifier),
and keep the certified state that queries answer from."""
