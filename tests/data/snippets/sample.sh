#!/usr/bin/env bash
set -euo pipefail

# Prints a greeting
greet() {
  echo "hello $1"
}

function cleanup {
  rm -rf /tmp/x
}

function with_parens() {
  local x=1
  inner() { echo nested; }
  inner
}

my-func() ( echo subshell )

main() {
  greet world
  cleanup
}

main "$@"
