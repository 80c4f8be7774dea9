#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyward::cli::main()
}
