#!/usr/bin/env bash
# demo.sh prints how to use the local stack that 'make up' started.
set -euo pipefail
dir=${1:-.stack}
# shellcheck disable=SC1091
source "$dir/env"
cat <<TEXT
sluice runs on the local stack, with Flux, Argo Rollouts and a Git server.

  source $dir/env
  kubectl get nodes                      # one kwok node, pods become Ready at once
  kubectl -n flux-system get gitrepositories,kustomizations
  kubectl get deliveries,deliverypolicies -A

Create a GitOps repository on the Git server and point Flux at it:

  git init --bare --initial-branch=main "\$SLUICE_GIT_ROOT/apps.git"
  git -C "\$SLUICE_GIT_ROOT/apps.git" config http.receivepack true
  git clone "http://\$SLUICE_GIT_USERNAME:\$SLUICE_GIT_PASSWORD@\${SLUICE_GIT_URL#http://}/apps.git"

Logs of every component: $dir/logs. Stop everything with 'make down'.
TEXT
