//! Progress on a terminal, under a pseudo-terminal made by script(1): `kvs start` of a
//! node that joins through a seed follows its bootstrap until its first complete sync,
//! and `kvs restore` and `kvs backup` show a bar; piped, `start` returns at once and says
//! nothing more.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::cluster::{SECRET, config, gossip_addr, sync_status};
use common::{Node, kvs_bin, run_kvs};

/// `kvs ARGS` run in `cwd` with a terminal for its output; what the terminal showed.
fn on_a_terminal(args: &str, cwd: &Path, home: &Path) -> String {
    let output = Command::new("script")
        .args(["-qec", &format!("{} {args}", kvs_bin()), "/dev/null"])
        .current_dir(cwd)
        .env("KVS_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("script(1) (util-linux) runs");
    assert!(
        output.status.success(),
        "kvs {args}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stops the daemon `name` of `dir` when dropped, whatever the test did.
struct Daemon<'a> {
    name: &'a str,
    dir: &'a Path,
    home: &'a Path,
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let home = self.home.to_str().unwrap_or_default();
        let _ = run_kvs(&["stop", self.name], self.dir, &[("KVS_HOME", home)]);
    }
}

#[test]
fn start_follows_a_bootstrap_and_restore_shows_a_bar_on_a_terminal() {
    let seed = Node::start_named("seed", &config(None, SECRET, ""));
    let preload = run_kvs(
        &[
            "bench",
            "--addr",
            &seed.base,
            "--keys",
            "2000",
            "--duration",
            "1s",
            "--get-ratio",
            "0",
            "--connections",
            "8",
        ],
        seed.dir.path(),
        &[],
    );
    assert!(preload.status.success(), "{preload:?}");
    assert_eq!(sync_status(&seed)["keys"], 2000);

    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let joiner = format!(
        "node_id: joiner\nhttp_port: 0\n{}",
        config(Some(&gossip_addr(&seed)), SECRET, "")
    );
    std::fs::write(dir.path().join("joiner.yaml"), &joiner).unwrap();
    let _stopped_at_the_end = Daemon {
        name: "joiner",
        dir: dir.path(),
        home: &home,
    };
    let shown = on_a_terminal("start joiner", dir.path(), &home);
    assert!(shown.contains("started joiner pid"), "{shown}");
    assert!(
        shown.contains("in sync with the cluster: 2000 keys"),
        "{shown}"
    );

    let env = [("KVS_HOME", home.to_str().unwrap())];
    assert!(
        run_kvs(&["stop", "joiner"], dir.path(), &env)
            .status
            .success()
    );
    let backup = dir.path().join("seed.mdb");
    let taken = run_kvs(
        &[
            "backup",
            seed.config.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert!(taken.status.success(), "{taken:?}");
    let restored = on_a_terminal(
        &format!("restore joiner {}", backup.display()),
        dir.path(),
        &home,
    );
    assert!(restored.contains("restoring"), "a bar: {restored}");
    assert!(restored.contains("restored 2000 keys"), "{restored}");
    // A backup without --out (of the stopped node, into its data dir) shows its progress.
    let backed_up = on_a_terminal("backup joiner", dir.path(), &home);
    assert!(backed_up.contains("backing up"), "a bar: {backed_up}");
    assert!(backed_up.contains("2000 keys"), "{backed_up}");

    // Piped, `start` says where the node is and returns; the node syncs by itself.
    let piped = run_kvs(&["start", "joiner"], dir.path(), &env);
    let said = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(piped.status.success(), "{piped:?}");
    assert!(said.contains("started joiner pid"), "{said}");
    assert!(!said.contains("in sync"), "{said}");
    assert!(
        run_kvs(&["stop", "joiner"], dir.path(), &env)
            .status
            .success()
    );
}
