//! `eshost plugin new`: a plugin project of its own, outside the eshost checkout: the source
//! of a small working plugin, a build script that uses the checkout's pinned tools, a fixture
//! for `eshost plugin test`, and an `eshost.toml` that serves it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// `eshost plugin new`.
#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// The plugin's name (lowercase letters, digits and `-`), as the host will know it.
    name: String,
    /// What it is.
    #[arg(long, value_enum)]
    kind: Kind,
    /// What it is written in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to create it [default: ./NAME]; must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The eshost checkout whose SDK and pinned build tools the project uses [default: the
    /// one this binary was built from].
    #[arg(long, env = "ESHOST_HOME")]
    eshost_home: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Aggregate,
    Projection,
    Upcaster,
    /// Built against contract 0.2, whose world added reactors.
    Reactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Javascript,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Aggregate => "aggregate",
            Kind::Projection => "projection",
            Kind::Upcaster => "upcaster",
            Kind::Reactor => "reactor",
        }
    }

    fn fixture(self) -> &'static str {
        match self {
            Kind::Aggregate => include_str!("../templates/fixtures/aggregate.json"),
            Kind::Projection => include_str!("../templates/fixtures/projection.json"),
            Kind::Upcaster => include_str!("../templates/fixtures/upcaster.json"),
            Kind::Reactor => include_str!("../templates/fixtures/reactor.json"),
        }
    }

    fn usage(self, name: &str) -> String {
        match self {
            Kind::Aggregate => format!(
                "With the host running:\n\n```sh\neshost command {name} counter-1 '{{\"type\":\"Add\",\"by\":3}}'\neshost state {name} counter-1\n```"
            ),
            Kind::Projection => format!(
                "With the host running:\n\n```sh\ncurl -s -X POST localhost:7070/streams/counter-1 -H 'content-type: application/json' \\\n  -d '{{\"expected\":\"any\",\"events\":[{{\"type\":\"Added\",\"schema_version\":2,\"data\":{{\"by\":3}}}}]}}'\neshost projection query {name} count '{{\"stream\":\"counter-1\"}}'\n```"
            ),
            Kind::Upcaster => {
                "List it in `[[upcasters]]` of the host that serves the aggregates and \
                 projections reading `Added`: they then see every old `Added` (version 1, `n`) as \
                 version 2 (`by`); stored events never change."
                    .to_owned()
            }
            Kind::Reactor => format!(
                "With the host running:\n\n```sh\ncurl -s -X POST localhost:7070/streams/counter-1 -H 'content-type: application/json' \\\n  -d '{{\"expected\":\"any\",\"events\":[{{\"type\":\"Added\",\"schema_version\":2,\"data\":{{\"by\":150}}}}]}}'\ncurl -s localhost:7070/streams/{name}-log   # the LargeAdd it appended\ncurl -s localhost:7070/reactors/{name}       # its checkpoint and what it did\n```"
            ),
        }
    }
}

/// The files of a project: (path in the project, template).
fn sources(kind: Kind, lang: Lang) -> Vec<(&'static str, &'static str)> {
    match (lang, kind) {
        (Lang::Rust, _) => vec![
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            (
                "src/lib.rs",
                match kind {
                    Kind::Aggregate => include_str!("../templates/rust/aggregate.rs"),
                    Kind::Projection => include_str!("../templates/rust/projection.rs"),
                    Kind::Upcaster => include_str!("../templates/rust/upcaster.rs"),
                    Kind::Reactor => include_str!("../templates/rust/reactor.rs"),
                },
            ),
            (
                "rust-toolchain.toml",
                include_str!("../../../rust-toolchain.toml"),
            ),
            ("build.sh", include_str!("../templates/rust/build.sh")),
        ],
        (Lang::Python, Kind::Aggregate) => vec![
            (
                "app.py",
                include_str!("../templates/python/app_aggregate.py"),
            ),
            (
                "aggregate.py",
                include_str!("../templates/python/aggregate.py"),
            ),
            ("build.sh", include_str!("../templates/python/build.sh")),
        ],
        (Lang::Python, Kind::Projection) => vec![
            (
                "app.py",
                include_str!("../templates/python/app_projection.py"),
            ),
            ("build.sh", include_str!("../templates/python/build.sh")),
        ],
        (Lang::Python, Kind::Reactor) => vec![
            ("app.py", include_str!("../templates/python/app_reactor.py")),
            ("build.sh", include_str!("../templates/python/build.sh")),
        ],
        (Lang::Python, Kind::Upcaster) => vec![
            (
                "app.py",
                include_str!("../templates/python/app_upcaster.py"),
            ),
            ("build.sh", include_str!("../templates/python/build.sh")),
        ],
        (Lang::Javascript, _) => vec![
            (
                "plugin.js",
                match kind {
                    Kind::Aggregate => include_str!("../templates/javascript/aggregate.js"),
                    Kind::Projection => include_str!("../templates/javascript/projection.js"),
                    Kind::Upcaster => include_str!("../templates/javascript/upcaster.js"),
                    Kind::Reactor => include_str!("../templates/javascript/reactor.js"),
                },
            ),
            ("build.sh", include_str!("../templates/javascript/build.sh")),
        ],
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "the plugin name {name:?} must be lowercase letters, digits and '-', starting with a letter (at most 64)"
        );
    }
    Ok(())
}

/// The checkout: given, or the one this binary was built from, if it is still there.
fn eshost_home(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let home = given.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let home = home.canonicalize().with_context(|| {
        format!(
            "the eshost checkout {} is not there; pass --eshost-home",
            home.display()
        )
    })?;
    for needed in [
        "sdk/Cargo.toml",
        "scripts/build-polyglot.sh",
        "wit/v0.1.0/plugin.wit",
        "wit/v0.2.0/plugin.wit",
    ] {
        if !home.join(needed).is_file() {
            bail!(
                "{} is not an eshost checkout (no {needed}); pass --eshost-home",
                home.display()
            );
        }
    }
    Ok(home)
}

pub(crate) fn new(args: PluginNewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let home = eshost_home(args.eshost_home)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let (name, kind, lang) = (args.name.as_str(), args.kind, args.lang);
    let interpreted = lang != Lang::Rust;
    let lang_name = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Javascript => "JavaScript",
    };
    let fill = |template: &str| {
        template
            .replace("{{NAME}}", name)
            .replace("{{CRATE}}", &name.replace('-', "_"))
            .replace("{{ESHOST_HOME}}", &home.display().to_string())
            .replace("{{WORLD}}", &format!("{}-plugin", kind.as_str()))
            .replace("{{SECTION}}", &format!("{}s", kind.as_str()))
            .replace("{{KIND}}", kind.as_str())
            .replace("{{LANG}}", lang_name)
            .replace(
                "{{LIMITS}}",
                if interpreted {
                    "limits = { memory_mb = 256, time_ms = 2000 }   # an interpreter needs more than Rust"
                } else {
                    ""
                },
            )
            .replace(
                "{{TEST_FLAGS}}",
                if interpreted { " --memory-mb 256 --time-ms 2000" } else { "" },
            )
            .replace("{{USAGE}}", &kind.usage(name))
    };
    let mut files = sources(kind, lang);
    files.extend([
        ("cases.json", kind.fixture()),
        ("eshost.toml", include_str!("../templates/eshost.toml")),
        ("README.md", include_str!("../templates/README.md")),
        (".gitignore", include_str!("../templates/gitignore")),
        ("watch.sh", include_str!("../templates/watch.sh")),
    ]);
    for (path, template) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, fill(template)).with_context(|| format!("writing {}", path.display()))?;
    }
    make_executable(&dir.join("build.sh"))?;
    make_executable(&dir.join("watch.sh"))?;
    println!(
        "created {} ({lang_name} {}). Next:\n  cd {}\n  ./build.sh\n  eshost plugin test {name}.wasm --fixture cases.json{}\n  eshost run --config eshost.toml",
        dir.display(),
        kind.as_str(),
        dir.display(),
        if interpreted {
            " --memory-mb 256 --time-ms 2000"
        } else {
            ""
        },
    );
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}
