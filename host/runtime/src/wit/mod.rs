//! The versions of the plugin contract this host loads, and the dispatch over them.
//!
//! Every released version of `eshost:plugin` is a frozen directory under `wit/` and a module
//! here with its own `bindgen!` and conversions to the host's types (`crate::types`):
//! [`v0_1`] serves `wit/v0.1.0`, and with it every 0.1.x component (wasmtime links
//! semver-compatible names). [`detect`] reads which version a component targets from the names
//! of its exports; the per-world enums ([`AggregatePre`], [`UpcasterPre`], [`ProjectionPre`] and
//! their instances) hold one variant per version, and each call is one `match` that forwards
//! to the version module. Nothing outside this module names a generated type.
//!
//! # Adding a version (say 0.2)
//!
//! 1. Copy `wit/v0.1.0` to `wit/v0.2.0` and make the changes there (0.1.0 is never edited).
//! 2. Add `v0_2.rs`: a `bindgen!` on `wit/v0.2.0` and conversions between its generated types
//!    and the host types, as `v0_1.rs` does. Where 0.2 carries something 0.1 cannot (say a
//!    faster event encoding), the host type grows and 0.1's conversion fills the default; the
//!    version module is where an encoding is chosen.
//! 3. Add a `V0_2` variant to [`WitVersion`] (and to `ALL`) and to the enums below, with one
//!    `match` arm per call, and link its imports in [`link_read_model`].
//! 4. A new world (a reactor, say) is a new kind in `PluginKind`, a new world module beside
//!    `aggregate.rs`, and its enums here, with variants only for the versions that have it.
//!
//! `v0_1.rs` and `wit/v0.1.0` stay as they are: 0.1 plugins keep loading, unchanged.

mod v0_1;
mod v0_2;

use wasmtime::component::{Component, InstancePre, Linker, ResourceAny};
use wasmtime::{Engine, Store};

use crate::error::LoadError;
use crate::plugin::World;
use crate::sandbox::HostState;
use crate::types::{
    Command, CommandError, Description, Event, EventError, Intent, NewEvent, PluginKind,
    QueryRefusal, UpcastResult,
};

/// The newest version of the `eshost:plugin` package this host implements.
pub const WIT_VERSION: &str = "0.2.0";

/// A line of compatible contract versions this host loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WitVersion {
    /// `eshost:plugin@0.1.x`, served by [`v0_1`].
    V0_1,
    /// `eshost:plugin@0.2.x`, served by [`v0_2`]: the reactor world.
    V0_2,
}

impl WitVersion {
    const ALL: [WitVersion; 2] = [WitVersion::V0_1, WitVersion::V0_2];

    /// The semver-compatible line: `0.1` is every 0.1.x.
    fn line(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1",
            WitVersion::V0_2 => "0.2",
        }
    }

    /// Whether this host serves `kind` at this version: 0.1 has no reactor, and this host
    /// serves 0.2 only for the reactor, the world it adds.
    fn serves(self, kind: PluginKind) -> bool {
        match self {
            WitVersion::V0_1 => kind != PluginKind::Reactor,
            WitVersion::V0_2 => kind == PluginKind::Reactor,
        }
    }

    /// The supported line a version such as `0.1.3` belongs to.
    fn of(version: &str) -> Option<WitVersion> {
        let line = compatible_line(version)?;
        WitVersion::ALL.into_iter().find(|v| v.line() == line)
    }
}

/// The lines this host loads, for messages: `0.1`, or `0.1, 0.2`.
pub(crate) fn supported() -> String {
    let lines: Vec<&str> = WitVersion::ALL.iter().map(|v| v.line()).collect();
    lines.join(", ")
}

/// The part of a semver version that compatible versions share, wasmtime's rule for linking:
/// `0.1.3` → `0.1`, `1.2.0` → `1`. `None` for anything but `major.minor.patch` in digits.
fn compatible_line(version: &str) -> Option<&str> {
    let mut parts = version.split('.');
    let numbers: Vec<&str> = parts.by_ref().take(3).collect();
    let digits = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if numbers.len() != 3 || parts.next().is_some() || !numbers.iter().all(digits) {
        return None;
    }
    let end = if numbers[0] == "0" {
        2 + numbers[1].len()
    } else {
        numbers[0].len()
    };
    Some(&version[..end])
}

/// What a component targets: a world, in a version of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) kind: PluginKind,
    pub(crate) version: WitVersion,
    /// The exact version it exports, e.g. `0.1.0`.
    pub(crate) exported: String,
}

/// `eshost:plugin/aggregate@0.1.0` → `(Aggregate, "0.1.0")`.
fn parse_export(name: &str) -> Option<(PluginKind, &str)> {
    let rest = name.strip_prefix("eshost:plugin/")?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    let kind = PluginKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == interface)?;
    Some((kind, version))
}

/// The plugin worlds a component's top level exports, read from its bytes without compiling
/// them: an upload of the wrong kind is refused before it costs a compilation. `None` when the
/// bytes do not parse (the compiler then says why).
pub(crate) fn declared_kinds(bytes: &[u8]) -> Option<Vec<PluginKind>> {
    let mut kinds = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    if let Some((kind, _)) = parse_export(export.ok()?.name.name)
                        && !kinds.contains(&kind)
                    {
                        kinds.push(kind);
                    }
                }
            }
            _ => {}
        }
    }
    Some(kinds)
}

/// The one plugin world a component's bytes say it targets (read without compiling them), if
/// they parse and name exactly one.
pub fn declared_kind(bytes: &[u8]) -> Option<PluginKind> {
    match declared_kinds(bytes)?.as_slice() {
        [kind] => Some(*kind),
        _ => None,
    }
}

/// Which world and contract version a component targets, from the eshost interfaces it
/// exports. A component exporting two worlds is refused; one exporting only versions this host
/// does not support is refused naming them; of several supported versions the newest wins.
pub(crate) fn detect(
    engine: &Engine,
    component: &Component,
    label: &str,
) -> Result<Target, LoadError> {
    let ty = component.component_type();
    let mut found: Option<Target> = None;
    let mut unsupported: Option<String> = None;
    for (name, _) in ty.exports(engine) {
        let Some((kind, exported)) = parse_export(name) else {
            continue;
        };
        let Some(version) = WitVersion::of(exported) else {
            unsupported = Some(exported.to_owned());
            continue;
        };
        if let Some(other) = &found {
            if other.kind != kind {
                return Err(LoadError::Invalid {
                    file: label.to_owned(),
                    message: format!(
                        "it exports both eshost:plugin/{} and eshost:plugin/{kind}; a plugin \
                         targets one world",
                        other.kind
                    ),
                });
            }
            if other.version >= version {
                continue;
            }
        }
        found = Some(Target {
            kind,
            version,
            exported: exported.to_owned(),
        });
    }
    match (found, unsupported) {
        (Some(target), _) if !target.version.serves(target.kind) => Err(LoadError::Invalid {
            file: label.to_owned(),
            message: format!(
                "it exports eshost:plugin/{}@{}; this host serves reactors at 0.2 and the other \
                 worlds at 0.1 (build {} against wit/v0.1.0)",
                target.kind,
                target.exported,
                target.kind.with_article()
            ),
        }),
        (Some(target), _) => Ok(target),
        (None, Some(found)) => Err(LoadError::UnsupportedVersion {
            file: label.to_owned(),
            found,
            supported: supported(),
        }),
        (None, None) => Err(LoadError::NotAPlugin {
            file: label.to_owned(),
        }),
    }
}

/// Adds the host interfaces projections of every version import (`read-model`) to `linker`.
pub(crate) fn link_read_model(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::link_read_model(linker)?;
    v0_2::link_read_model(linker)
}

/// An aggregate component of some contract version, ready to instantiate.
pub(crate) enum AggregatePre {
    V0_1(v0_1::AggregatePre),
}

/// An instantiated aggregate component.
pub(crate) enum AggregateGuest {
    V0_1(v0_1::Aggregate),
}

impl AggregatePre {
    pub(crate) fn new(
        version: WitVersion,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<AggregatePre> {
        match version {
            WitVersion::V0_1 => Ok(AggregatePre::V0_1(v0_1::AggregatePre::new(pre)?)),
            WitVersion::V0_2 => Err(unserved(version, PluginKind::Aggregate)),
        }
    }
}

impl World for AggregatePre {
    type Bindings = AggregateGuest;

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<AggregateGuest> {
        match self {
            AggregatePre::V0_1(pre) => Ok(AggregateGuest::V0_1(pre.instantiate(store)?)),
        }
    }

    fn describe(
        store: &mut Store<HostState>,
        guest: &AggregateGuest,
    ) -> wasmtime::Result<Description> {
        match guest {
            AggregateGuest::V0_1(guest) => guest.describe(store),
        }
    }
}

impl AggregateGuest {
    /// The resource's constructor: a fresh aggregate `id`.
    pub(crate) fn construct(
        &self,
        store: &mut Store<HostState>,
        id: &str,
    ) -> wasmtime::Result<ResourceAny> {
        match self {
            AggregateGuest::V0_1(guest) => guest.construct(store, id),
        }
    }

    pub(crate) fn restore(
        &self,
        store: &mut Store<HostState>,
        id: &str,
        snapshot: &[u8],
    ) -> wasmtime::Result<Result<ResourceAny, String>> {
        match self {
            AggregateGuest::V0_1(guest) => guest.restore(store, id, snapshot),
        }
    }

    pub(crate) fn apply(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
        events: &[Event],
    ) -> wasmtime::Result<Result<(), EventError>> {
        match self {
            AggregateGuest::V0_1(guest) => guest.apply(store, aggregate, events),
        }
    }

    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
        command: &Command,
    ) -> wasmtime::Result<Result<Vec<NewEvent>, CommandError>> {
        match self {
            AggregateGuest::V0_1(guest) => guest.handle(store, aggregate, command),
        }
    }

    pub(crate) fn snapshot(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
    ) -> wasmtime::Result<Vec<u8>> {
        match self {
            AggregateGuest::V0_1(guest) => guest.snapshot(store, aggregate),
        }
    }

    pub(crate) fn state(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
    ) -> wasmtime::Result<String> {
        match self {
            AggregateGuest::V0_1(guest) => guest.state(store, aggregate),
        }
    }
}

/// An upcaster component of some contract version, ready to instantiate.
pub(crate) enum UpcasterPre {
    V0_1(v0_1::UpcasterPre),
}

/// An instantiated upcaster component.
pub(crate) enum UpcasterGuest {
    V0_1(v0_1::Upcaster),
}

impl UpcasterPre {
    pub(crate) fn new(
        version: WitVersion,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<UpcasterPre> {
        match version {
            WitVersion::V0_1 => Ok(UpcasterPre::V0_1(v0_1::UpcasterPre::new(pre)?)),
            WitVersion::V0_2 => Err(unserved(version, PluginKind::Upcaster)),
        }
    }
}

impl World for UpcasterPre {
    type Bindings = UpcasterGuest;

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<UpcasterGuest> {
        match self {
            UpcasterPre::V0_1(pre) => Ok(UpcasterGuest::V0_1(pre.instantiate(store)?)),
        }
    }

    fn describe(
        store: &mut Store<HostState>,
        guest: &UpcasterGuest,
    ) -> wasmtime::Result<Description> {
        match guest {
            UpcasterGuest::V0_1(guest) => guest.describe(store),
        }
    }
}

impl UpcasterGuest {
    pub(crate) fn upcast(
        &self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Result<UpcastResult, String>> {
        match self {
            UpcasterGuest::V0_1(guest) => guest.upcast(store, event),
        }
    }
}

/// A projection component of some contract version, ready to instantiate.
pub(crate) enum ProjectionPre {
    V0_1(v0_1::ProjectionPre),
}

/// An instantiated projection component.
pub(crate) enum ProjectionGuest {
    V0_1(v0_1::Projection),
}

impl ProjectionPre {
    pub(crate) fn new(
        version: WitVersion,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<ProjectionPre> {
        match version {
            WitVersion::V0_1 => Ok(ProjectionPre::V0_1(v0_1::ProjectionPre::new(pre)?)),
            WitVersion::V0_2 => Err(unserved(version, PluginKind::Projection)),
        }
    }
}

impl World for ProjectionPre {
    type Bindings = ProjectionGuest;

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<ProjectionGuest> {
        match self {
            ProjectionPre::V0_1(pre) => Ok(ProjectionGuest::V0_1(pre.instantiate(store)?)),
        }
    }

    fn describe(
        store: &mut Store<HostState>,
        guest: &ProjectionGuest,
    ) -> wasmtime::Result<Description> {
        match guest {
            ProjectionGuest::V0_1(guest) => guest.describe(store),
        }
    }
}

impl ProjectionGuest {
    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<(), EventError>> {
        match self {
            ProjectionGuest::V0_1(guest) => guest.handle(store, events),
        }
    }

    pub(crate) fn query(
        &self,
        store: &mut Store<HostState>,
        name: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, QueryRefusal>> {
        match self {
            ProjectionGuest::V0_1(guest) => guest.query(store, name, args),
        }
    }
}

/// The error for a world a version does not have here ([`detect`] refuses these first).
fn unserved(version: WitVersion, kind: PluginKind) -> wasmtime::Error {
    wasmtime::format_err!(
        "this host does not serve {kind} plugins at {}",
        version.line()
    )
}

/// A reactor component of some contract version, ready to instantiate.
pub(crate) enum ReactorPre {
    V0_2(v0_2::ReactorPre),
}

/// An instantiated reactor component.
pub(crate) enum ReactorGuest {
    V0_2(v0_2::Reactor),
}

impl ReactorPre {
    pub(crate) fn new(
        version: WitVersion,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<ReactorPre> {
        match version {
            WitVersion::V0_2 => Ok(ReactorPre::V0_2(v0_2::ReactorPre::new(pre)?)),
            WitVersion::V0_1 => Err(unserved(version, PluginKind::Reactor)),
        }
    }
}

impl World for ReactorPre {
    type Bindings = ReactorGuest;

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<ReactorGuest> {
        match self {
            ReactorPre::V0_2(pre) => Ok(ReactorGuest::V0_2(pre.instantiate(store)?)),
        }
    }

    fn describe(
        store: &mut Store<HostState>,
        guest: &ReactorGuest,
    ) -> wasmtime::Result<Description> {
        match guest {
            ReactorGuest::V0_2(guest) => guest.describe(store),
        }
    }
}

impl ReactorGuest {
    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<Vec<Intent>, EventError>> {
        match self {
            ReactorGuest::V0_2(guest) => guest.handle(store, events),
        }
    }

    pub(crate) fn query(
        &self,
        store: &mut Store<HostState>,
        name: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, QueryRefusal>> {
        match self {
            ReactorGuest::V0_2(guest) => guest.query(store, name, args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reactor_is_served_at_0_2_only_and_the_other_worlds_at_0_1_only() {
        for kind in PluginKind::ALL {
            let reactor = kind == PluginKind::Reactor;
            assert_eq!(WitVersion::V0_1.serves(kind), !reactor, "{kind}");
            assert_eq!(WitVersion::V0_2.serves(kind), reactor, "{kind}");
        }
        assert_eq!(
            parse_export("eshost:plugin/reactor@0.2.0"),
            Some((PluginKind::Reactor, "0.2.0"))
        );
    }

    #[test]
    fn exports_are_parsed_with_their_version() {
        assert_eq!(
            parse_export("eshost:plugin/aggregate@0.1.0"),
            Some((PluginKind::Aggregate, "0.1.0"))
        );
        assert_eq!(
            parse_export("eshost:plugin/projection@0.3.1"),
            Some((PluginKind::Projection, "0.3.1"))
        );
        assert_eq!(parse_export("eshost:plugin/types@0.1.0"), None);
        assert_eq!(parse_export("wasi:cli/run@0.2.0"), None);
    }

    #[test]
    fn every_patch_is_served_by_its_line_and_nothing_else_is() {
        assert_eq!(WitVersion::of("0.1.0"), Some(WitVersion::V0_1));
        assert_eq!(WitVersion::of("0.1.7"), Some(WitVersion::V0_1));
        assert_eq!(WitVersion::of("0.2.4"), Some(WitVersion::V0_2));
        assert_eq!(WitVersion::of("0.3.0"), None);
        assert_eq!(WitVersion::of("1.0.0"), None);
        assert_eq!(WitVersion::of("0.1"), None);
        assert_eq!(WitVersion::of("0.1.0-rc1"), None);
        assert_eq!(compatible_line("0.12.4"), Some("0.12"));
        assert_eq!(compatible_line("2.3.4"), Some("2"));
        assert_eq!(supported(), "0.1, 0.2");
    }
}
