#!/usr/bin/env bash
# Builds the Debian package into target/debian/: a release build, the man
# pages and shell completions the binary generates from its own command line
# (`planbox generate`, hidden), then `cargo deb --no-build`, which packs them
# with the binary (see [package.metadata.deb] assets in Cargo.toml).
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Arguments go to
# `cargo deb` (e.g. --output DIR). Prints cargo deb's output, the package's
# path last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo-deb >/dev/null || {
    echo "build-deb: cargo-deb not found (cargo install cargo-deb --locked)" >&2
    exit 2
}
cargo build --release --locked
rm -rf target/assets
target/release/planbox generate target/assets > /dev/null
# Debian ships man pages compressed; -n keeps the build reproducible.
gzip -9n target/assets/man/*.1
cargo deb --no-build "$@"
