//! The man pages and shell completions, generated from the clap
//! definitions in `cli.rs` (so they cannot drift from `--help`):
//! `planbox.1` and one page per command (`planbox-serve.1`, …) with
//! `clap_mangen`; bash, zsh and fish completions with `clap_complete`.
//! The packaging step (`packaging/build-deb.sh`) runs the hidden
//! `planbox generate DIR` and the `.deb` installs what it wrote.
//!
//! Writes only below the directory it is given.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// What `planbox(1)` adds after the options and commands clap describes:
/// where the rest of the documentation is.
const MAIN_PAGE_EXTRA: &str = r#".SH ENVIRONMENT
Every
.B serve
flag has a
.B PLANBOX_*
variable (named beside each option in
.BR planbox\-serve (1));
a flag wins over the variable, the variable over the default.
.B PLANBOX_LOG
sets the log level:
.BR error ", " warn ", " info " (default) or " debug .
.SH FILES
.TP
.I /etc/default/planbox
the service's configuration (Debian package), one
.B PLANBOX_*=value
per line
.TP
.I /var/lib/planbox/planbox.db
the store (with its
.I \-wal
and
.I \-shm
files while it runs)
.TP
.I /usr/share/doc/planbox/DEPLOYMENT.md
running it on a box: install, backups, several boxes, HTTP caches in front,
monitoring, alerts and their runbooks
.TP
.I /usr/share/planbox/monitoring/
a Grafana dashboard and Prometheus alert rules
.SH SEE ALSO
.BR planbox\-serve (1),
.BR systemctl (1),
.BR journalctl (1)
"#;

/// Writes `man/planbox*.1` and `completions/{planbox.bash,_planbox,planbox.fish}`
/// below `dir`; returns the files written.
pub fn generate(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let mut written = Vec::new();

    let mut cmd = visible().disable_help_subcommand(true);
    cmd.build();
    let page = man.join("planbox.1");
    let mut out = Vec::new();
    main_page(&cmd, &mut out)?;
    fs::write(&page, out)?;
    written.push(page);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = clap_mangen::Man::new(sub.clone());
        written.push(page.generate_to(&man)?);
    }

    for (shell, name) in [
        (Shell::Bash, "planbox.bash"),
        (Shell::Zsh, "_planbox"),
        (Shell::Fish, "planbox.fish"),
    ] {
        let path = completions.join(name);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut visible(), "planbox", &mut out);
        fs::write(&path, out)?;
        written.push(path);
    }
    Ok(written)
}

/// The command line as users see it: `Cli` without its hidden commands
/// (`clap_complete` would offer them).
fn visible() -> clap::Command {
    let cli = Cli::command();
    let mut cmd = clap::Command::new("planbox")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(true);
    if let Some(about) = cli.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// `planbox(1)`: clap's sections, then [`MAIN_PAGE_EXTRA`] before the version.
fn main_page(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.write_all(MAIN_PAGE_EXTRA.as_bytes())?;
    man.render_version_section(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_visible_command_and_completions_without_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "planbox.1",
            "planbox-serve.1",
            "planbox-healthcheck.1",
            "planbox.bash",
            "_planbox",
            "planbox.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        let main = read("man/planbox.1");
        assert!(main.starts_with(".ie \\n(.g .ds Aq"), "roff: {main:.80}");
        assert!(main.contains(".SH FILES") && main.contains("planbox\\-serve(1)"));
        assert!(main.find(".SH FILES") < main.find(".SH VERSION"));
        let serve = read("man/planbox-serve.1");
        assert!(serve.contains("PLANBOX_FETCH_INTERVAL"), "env named");
        assert!(serve.contains("cache\\-max\\-age"));
        for shell in [
            "completions/planbox.bash",
            "completions/_planbox",
            "completions/planbox.fish",
        ] {
            let text = read(shell);
            assert!(text.contains("healthcheck"), "{shell}");
            assert!(!text.contains("generate"), "{shell}: the hidden command");
        }
    }
}
