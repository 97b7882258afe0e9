//! The CLI's output to stdout. `println!` panics when the reader has gone (`kvs ls | head
//! -1`, `kvs watch PREFIX | head -1`); these end the process quietly with exit 0 then,
//! as a command in a pipeline is expected to, and with exit 1 on any other write error.
//! A command that may print nothing for long (`kvs watch`) also watches the pipe itself
//! ([`end_when_reader_goes`]), so that it ends when its reader goes, not at its next line.

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

/// Ends the process (exit 0) as soon as stdout is a pipe whose reader has gone, without
/// waiting for the next write to fail: `kvs watch PREFIX | head -1` otherwise went on until
/// another change came (found by a black-box audit). A thread waits in `poll(2)` for the
/// pipe's error; stdout that is not a pipe is left alone.
pub fn end_when_reader_goes() {
    use std::os::fd::AsFd as _;
    let stdout = std::io::stdout();
    let is_pipe = nix::sys::stat::fstat(stdout.as_fd()).is_ok_and(|stat| {
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode)
            .contains(nix::sys::stat::SFlag::S_IFIFO)
    });
    if !is_pipe {
        return;
    }
    std::thread::spawn(move || {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            // No event asked for: poll returns only for the pipe's error or hang-up.
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
                    if fds[0]
                        .revents()
                        .is_some_and(|revents| revents.intersects(gone))
                    {
                        std::process::exit(0);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });
}
