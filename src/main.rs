//! The `planbox` binary: everything lives in the library; see `app.rs`.

fn main() -> std::process::ExitCode {
    planbox::app::main()
}
