//! The `kdiag` binary: see `kdiag --help`.

fn main() {
    std::process::exit(kdiag_cli::run());
}
