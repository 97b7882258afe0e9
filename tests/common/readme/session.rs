//! A new user's terminal for the README's steps: one bash session in a fresh folder, with
//! `kvs` (the binary under test) and `curl` (recording each status) on its PATH, `$HOME`
//! in the folder, and the README's ports replaced by free ones. A `kvs run NAME` runs in
//! the background, as in a second terminal. Every process it started is ended on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::{Outcome, Step, substitute_ports};

/// The ports the README uses; each is replaced by a free one.
pub const README_PORTS: [u16; 6] = [8080, 8081, 7946, 7947, 7956, 7957];
/// What the curl wrapper prints on stderr before each status.
const STATUS: &str = "__readme_status=";
/// What ends a step's output.
const END: &str = "__readme_end=";
/// How long one step may take before the test gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(300);

/// The terminal.
pub struct Session {
    pub dir: tempfile::TempDir,
    pub ports: Vec<(u16, u16)>,
    bash: Child,
    input: ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    foreground: Vec<(String, Child)>,
}

/// Free ports, one for each of the README's, each open for TCP and UDP. They are drawn
/// below the kernel's ephemeral range (32768 and up on Linux), so that no `bind(0)` of a
/// test running alongside can take one between this check and the node's own bind.
fn free_ports() -> Vec<(u16, u16)> {
    let mut chosen: Vec<(u16, u16)> = Vec::new();
    let mut rng = rand::thread_rng();
    for &from in &README_PORTS {
        let port = loop {
            let port = rand::Rng::gen_range(&mut rng, 20_000..32_000);
            let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
            if free && chosen.iter().all(|&(_, taken)| taken != port) {
                break port;
            }
        };
        chosen.push((from, port));
    }
    chosen
}

/// `lines` of a pipe, sent one by one.
fn reader(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A folder `bin/` with `kvs` and the recording `curl`.
fn tools(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(super::super::kvs_bin(), bin.join("kvs")).expect("kvs link");
    let curl = which("curl").expect("curl is not installed (.ci/run installs it)");
    let wrapper = format!(
        "#!/bin/sh\n# tests/readme.rs: the real curl, silent but for errors, recording each status\nexec {} -sS -w '%{{stderr}}{STATUS}%{{http_code}}\\n' \"$@\"\n",
        curl.display()
    );
    let path = bin.join("curl");
    std::fs::write(&path, wrapper).expect("curl wrapper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

/// The first `name` on `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

impl Session {
    /// A fresh folder and a bash session in it.
    pub fn new() -> Session {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports();
        let bin = tools(dir.path());
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut bash = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir.path())
            .env("PATH", path)
            .env("HOME", &home)
            .env_remove("KVS_HOME")
            .env_remove("KVS_TOKEN")
            .env("KVS_ADDR", format!("http://127.0.0.1:{}", ports[0].1))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let input = bash.stdin.take().expect("stdin");
        let stdout = reader(bash.stdout.take().expect("stdout"));
        let stderr = reader(bash.stderr.take().expect("stderr"));
        Session {
            dir,
            ports,
            bash,
            input,
            stdout,
            stderr,
            foreground: Vec::new(),
        }
    }

    /// The README's text with its ports replaced.
    pub fn localize(&self, text: &str) -> String {
        substitute_ports(text, &self.ports)
    }

    /// Does `step`; the outcome of a command, to be checked.
    pub fn execute(&mut self, step: &Step) -> Option<Outcome> {
        match step {
            Step::Save { file, text } => {
                std::fs::write(self.dir.path().join(file), self.localize(text)).expect("save");
                None
            }
            Step::Interrupt { name, .. } => {
                self.interrupt(name);
                None
            }
            Step::Run { command, .. } => {
                let command = self.localize(command);
                self.generate_configs(&command);
                Some(match foreground_node(&command) {
                    Some(name) => self.run_foreground(&name),
                    None => self.run(&command),
                })
            }
        }
    }

    /// Writes the default config `kvs run|start NAME` would write, with the ports
    /// replaced, when NAME.yaml does not exist yet.
    fn generate_configs(&self, command: &str) {
        for name in launched(command) {
            let file = self.dir.path().join(format!("{name}.yaml"));
            if !file.exists() {
                std::fs::write(&file, self.localize(&default_config())).expect("config");
                use std::os::unix::fs::PermissionsExt as _;
                let private = std::fs::Permissions::from_mode(0o600);
                std::fs::set_permissions(&file, private).expect("chmod");
            }
        }
    }

    /// Runs `command` in the bash session to its end.
    pub fn run(&mut self, command: &str) -> Outcome {
        let script = format!("{command}\nprintf '\\n{END}%d\\n' $? ; printf '\\n{END}\\n' >&2\n");
        self.input.write_all(script.as_bytes()).expect("to bash");
        self.input.flush().expect("to bash");
        let (stdout, exit) = collect(&self.stdout, |l| l.strip_prefix(END).map(str::to_owned));
        let (stderr, _) = collect(&self.stderr, |l| (l == END).then(String::new));
        let statuses = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(STATUS)?.parse().ok())
            .collect();
        let stderr = stderr
            .lines()
            .filter(|l| !l.starts_with(STATUS))
            .map(|l| format!("{l}\n"))
            .collect();
        Outcome {
            exit: exit.parse().unwrap_or(-1),
            stdout: stdout.trim_end_matches('\n').to_owned(),
            stderr,
            statuses,
        }
    }

    /// `kvs run NAME` as in a second terminal: started, and left running once it serves
    /// (exit 0), or its output when it exits first.
    fn run_foreground(&mut self, name: &str) -> Outcome {
        let mut child = Command::new(super::super::kvs_bin())
            .args(["run", name])
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path().join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvs run");
        let log = reader(child.stderr.take().expect("stderr"));
        let mut printed = String::new();
        loop {
            match log.recv_timeout(STEP_LIMIT) {
                Ok(line) if line.contains("http_addr=") => break,
                Ok(line) => printed.push_str(&format!("{line}\n")),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().expect("wait");
                    return Outcome {
                        exit: status.code().unwrap_or(-1),
                        stderr: printed,
                        ..Outcome::default()
                    };
                }
            }
        }
        // Its log goes on in its own terminal.
        std::thread::spawn(move || for _ in log {});
        self.foreground.push((name.to_owned(), child));
        Outcome::default()
    }

    /// Ctrl-C: SIGINT to the foreground node `name`, which must exit 0.
    fn interrupt(&mut self, name: &str) {
        let at = self
            .foreground
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no foreground kvs run {name}"));
        let (_, mut child) = self.foreground.remove(at);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let status = child.wait().expect("wait");
        assert!(status.success(), "kvs run {name} after Ctrl-C: {status}");
    }

    /// The daemons `kvs start` left, by their pid files.
    fn daemons(&self) -> Vec<i32> {
        let pids = self.dir.path().join("home/.kvs/pids");
        std::fs::read_dir(pids)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let path = e.ok()?.path();
                (path.extension()? == "pid").then_some(())?;
                std::fs::read_to_string(path).ok()?.trim().parse().ok()
            })
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, child) in &mut self.foreground {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.daemons() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.bash.kill();
        let _ = self.bash.wait();
    }
}

/// Lines from `rx` up to the one `end` recognizes: the text before it and what `end`
/// made of it.
fn collect(rx: &Receiver<String>, end: impl Fn(&str) -> Option<String>) -> (String, String) {
    let mut text = String::new();
    loop {
        let line = rx
            .recv_timeout(STEP_LIMIT)
            .unwrap_or_else(|_| panic!("a step ran past {STEP_LIMIT:?}; output: {text}"));
        if let Some(found) = end(&line) {
            return (text, found);
        }
        text.push_str(&line);
        text.push('\n');
    }
}

/// `kvs run NAME` (the whole command): NAME.
fn foreground_node(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split('#').next()?.split_whitespace().collect();
    match words.as_slice() {
        ["kvs", "run", name] => Some((*name).to_owned()),
        _ => None,
    }
}

/// The configs `kvs run|start|restart NAME` in `command` name.
fn launched(command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "kvs" && ["run", "start", "restart"].contains(&w[1]))
        .map(|w| w[2].trim_end_matches(".yaml").to_owned())
        .collect()
}

/// The config `kvs` writes for a new node, with fresh identity and secrets.
fn default_config() -> String {
    let secret = || format!("{:032x}{:032x}", rand_u128(), rand_u128());
    include_str!("../../../src/config_template.yaml")
        .replace("{node_id}", &format!("{:032x}", rand_u128()))
        .replace("{cluster_secret}", &secret())
        .replace("{jwt_secret}", &secret())
}

/// 128 random bits (from the OS, through a fresh hasher's random keys).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let half = || u128::from(RandomState::new().hash_one(0u8));
    half() << 64 | half()
}
