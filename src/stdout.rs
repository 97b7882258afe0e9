//! The CLI's output to stdout. `println!` panics when the reader has gone (`kvs ls | head
//! -1`, `kvs watch PREFIX | head -1`); these end the process quietly with exit 0 then,
//! as a command in a pipeline is expected to, and with exit 1 on any other write error.

use std::io::Write as _;

/// Writes `text` and a newline to stdout (see the module doc).
pub fn line(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    finish(writeln!(out, "{text}").and_then(|()| out.flush()));
}

/// Writes `bytes` to stdout as they are (see the module doc).
pub fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    finish(out.write_all(bytes).and_then(|()| out.flush()));
}

fn finish(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("kvs: writing to stdout: {error}");
            std::process::exit(1);
        }
    }
}
