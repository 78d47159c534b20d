#!/bin/sh
# Installs the uploaded greeting and shows it.
set -eu
sudo install -m 0644 /tmp/greeting.txt /srv/demo/greeting.txt
echo "installed /srv/demo/greeting.txt:"
cat /srv/demo/greeting.txt
