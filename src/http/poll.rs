//! The kernel side of the connection layer: a readiness set whose
//! descriptors fire once and stay quiet until re-armed (`epoll` with
//! `EPOLLONESHOT` on Linux; `poll(2)` over the armed descriptors
//! elsewhere), and the descriptor that wakes the poller (`eventfd` on
//! Linux, a pipe elsewhere).
//!
//! Must not know about connections or HTTP: it deals in descriptors and
//! tokens.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn millis(timeout: Duration) -> libc::c_int {
    timeout.as_millis().min(i32::MAX as u128) as libc::c_int
}

/// Wakes a thread blocked in [`Readiness::wait`] on [`Waker::fd`].
pub(crate) struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

impl Waker {
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the fd is owned at once.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is fresh and nobody else's.
        let read = unsafe { OwnedFd::from_raw_fd(fd) };
        let write = read.try_clone()?;
        Ok(Waker { read, write })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Waker> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `pipe` writes two descriptors into the array.
        check(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        // SAFETY: both are fresh and nobody else's.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: fcntl on our own descriptors with integer flags.
            unsafe {
                let fl = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
                check(libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_SETFL,
                    fl | libc::O_NONBLOCK,
                ))?;
                check(libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC))?;
            }
        }
        Ok(Waker { read, write })
    }

    /// The descriptor to watch.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local. A full pipe or counter
        // already means "wake up".
        unsafe {
            libc::write(self.write.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Clears what [`wake`](Self::wake) wrote.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer until it would block.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

/// `epoll`: one-shot for connections, level-triggered for the waker.
#[cfg(target_os = "linux")]
pub(crate) struct Readiness {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

#[cfg(target_os = "linux")]
impl Readiness {
    pub(crate) fn new() -> io::Result<Readiness> {
        // SAFETY: plain syscall; the fd is owned at once.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Readiness {
            // SAFETY: `fd` is fresh and ours.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Vec::with_capacity(1024),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, oneshot: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if oneshot {
            flags |= libc::EPOLLONESHOT;
        }
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the descriptors are open.
        check(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Watches `fd` for input (and hang-ups); one-shot or level-triggered.
    pub(crate) fn add(&mut self, fd: RawFd, token: u64, oneshot: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, oneshot)
    }

    /// Arms a one-shot `fd` again (it fires at once if input is waiting).
    pub(crate) fn rearm(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, true)
    }

    /// `fd` is about to be closed (closing removes it from an epoll set).
    pub(crate) fn forget(&mut self, _fd: RawFd) {}

    /// Waits up to `timeout`; the tokens of what fired go to `out`.
    pub(crate) fn wait(&mut self, out: &mut Vec<u64>, timeout: Duration) -> io::Result<()> {
        out.clear();
        let cap = self.events.capacity() as libc::c_int;
        // SAFETY: the kernel writes at most `cap` events into the spare
        // capacity; `set_len` covers only what it wrote.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                cap,
                millis(timeout),
            )
        };
        match check(n) {
            Ok(n) => unsafe { self.events.set_len(n as usize) },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        out.extend(self.events.iter().map(|e| e.u64));
        Ok(())
    }
}

/// `poll(2)` over every watched descriptor; a one-shot one is disabled
/// (its fd negated, which `poll` skips) once it fired. O(descriptors) per
/// wait: what a box without `epoll` can do.
#[cfg(any(not(target_os = "linux"), test))]
pub(crate) struct PollSet {
    fds: Vec<libc::pollfd>,
    tokens: Vec<(u64, bool)>,
    at: std::collections::HashMap<RawFd, usize>,
}

#[cfg(not(target_os = "linux"))]
pub(crate) type Readiness = PollSet;

#[cfg(any(not(target_os = "linux"), test))]
impl PollSet {
    pub(crate) fn new() -> io::Result<PollSet> {
        Ok(PollSet {
            fds: Vec::new(),
            tokens: Vec::new(),
            at: std::collections::HashMap::new(),
        })
    }

    pub(crate) fn add(&mut self, fd: RawFd, token: u64, oneshot: bool) -> io::Result<()> {
        match self.at.get(&fd) {
            Some(&i) => {
                self.fds[i].fd = fd;
                self.tokens[i] = (token, oneshot);
            }
            None => {
                self.at.insert(fd, self.fds.len());
                self.fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                self.tokens.push((token, oneshot));
            }
        }
        Ok(())
    }

    pub(crate) fn rearm(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let i = *self.at.get(&fd).ok_or(io::ErrorKind::NotFound)?;
        self.fds[i].fd = fd;
        self.tokens[i].0 = token;
        Ok(())
    }

    pub(crate) fn forget(&mut self, fd: RawFd) {
        if let Some(i) = self.at.remove(&fd) {
            self.fds.swap_remove(i);
            self.tokens.swap_remove(i);
            if let Some(moved) = self.fds.get(i) {
                let real = if moved.fd < 0 { !moved.fd } else { moved.fd };
                self.at.insert(real, i);
            }
        }
    }

    pub(crate) fn wait(&mut self, out: &mut Vec<u64>, timeout: Duration) -> io::Result<()> {
        out.clear();
        // SAFETY: `poll` reads and writes the array it is given, in bounds.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                millis(timeout),
            )
        };
        match check(n) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for (p, &(token, oneshot)) in self.fds.iter_mut().zip(&self.tokens) {
            if p.revents != 0 && p.fd >= 0 {
                out.push(token);
                if oneshot {
                    p.fd = !p.fd;
                }
            }
            p.revents = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// The same one-shot contract from both implementations.
    macro_rules! one_shot_contract {
        ($set:expr) => {{
            let mut set = $set;
            let waker = Waker::new().unwrap();
            set.add(waker.fd(), 99, false).unwrap();
            let (mut a, b) = pair();
            let (_c, d) = pair();
            set.add(b.as_raw_fd(), 1, true).unwrap();
            set.add(d.as_raw_fd(), 2, true).unwrap();
            let mut out = Vec::new();
            let short = Duration::from_millis(20);
            set.wait(&mut out, short).unwrap();
            assert!(out.is_empty(), "{out:?}");
            a.write_all(b"x").unwrap();
            set.wait(&mut out, Duration::from_secs(5)).unwrap();
            assert_eq!(out, [1]);
            // Fired once: quiet until re-armed, though input still waits.
            set.wait(&mut out, short).unwrap();
            assert!(out.is_empty(), "{out:?}");
            set.rearm(b.as_raw_fd(), 3).unwrap();
            set.wait(&mut out, Duration::from_secs(5)).unwrap();
            assert_eq!(out, [3]);
            // The waker is level-triggered until drained.
            waker.wake();
            set.wait(&mut out, Duration::from_secs(5)).unwrap();
            assert_eq!(out, [99]);
            set.wait(&mut out, short).unwrap();
            assert_eq!(out, [99]);
            waker.drain();
            set.wait(&mut out, short).unwrap();
            assert!(out.is_empty(), "{out:?}");
            set.forget(b.as_raw_fd());
            drop(b);
            set.forget(d.as_raw_fd());
        }};
    }

    #[test]
    fn descriptors_fire_once_until_rearmed_and_the_waker_wakes() {
        one_shot_contract!(Readiness::new().unwrap());
        one_shot_contract!(PollSet::new().unwrap());
    }
}
