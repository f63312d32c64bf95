#!/usr/bin/env bash
# The `local` target's teardown: stop this resource's server and forget its state.
# Exits 0 when there is nothing left to stop, because the contract retries teardowns freely.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=local_lib.sh
source "$here/local_lib.sh"

if [[ ! -d "$state_dir" ]]; then
    echo "nothing to tear down for ${RESOURCE_ID:-?}"
    exit 0
fi
stop_server
rm -f "$pid_file" "$port_file" "$ref_file" "$log_file"
echo "tore down local server for ${RESOURCE_ID:-?}"
