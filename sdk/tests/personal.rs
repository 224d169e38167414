//! Personal data through the harness: the split on the way out, the merge on the way in, and
//! `forget`, for an aggregate and a projection.

use eshost_sdk::serde_json::{Value, json};
use eshost_sdk::testing::{AggregateTest, ProjectionTest, given};
use eshost_sdk::{
    Aggregate, CommandContext, DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel,
    ReadModelView, Rejection, StoredEvent,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Joined {
        member: String,
        #[serde(default)]
        name: Option<String>,
        plan: String,
    },
    Renamed {
        member: String,
        #[serde(default)]
        name: Option<String>,
    },
}

impl DomainEvent for Event {
    const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("Joined", &["name"]), ("Renamed", &["name"])];

    fn subject_id(&self) -> Option<String> {
        let (Self::Joined { member, .. } | Self::Renamed { member, .. }) = self;
        // An empty member id is the bug the harness must surface.
        (!member.is_empty()).then(|| member.clone())
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Command {
    Join {
        name: String,
    },
    Rename {
        name: String,
    },
    /// A buggy command: personal data with no subject.
    JoinAnonymously {
        name: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Member {
    id: String,
    name: Option<String>,
    renames: u32,
}

impl Aggregate for Member {
    const NAME: &'static str = "member";
    type Command = Command;
    type Event = Event;

    fn initial(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    fn handle(&self, command: Command, ctx: &CommandContext) -> Result<Vec<Event>, Rejection> {
        let member = ctx.id.to_owned();
        Ok(vec![match command {
            Command::Join { name } => Event::Joined {
                member,
                name: Some(name),
                plan: "basic".into(),
            },
            Command::Rename { name } => Event::Renamed {
                member,
                name: Some(name),
            },
            Command::JoinAnonymously { name } => Event::Joined {
                member: String::new(),
                name: Some(name),
                plan: "basic".into(),
            },
        }])
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Joined { name, .. } => self.name = name,
            Event::Renamed { name, .. } => {
                self.name = name;
                self.renames += 1;
            }
        }
    }
}

fn joined(member: &str, name: &str) -> Event {
    Event::Joined {
        member: member.into(),
        name: Some(name.into()),
        plan: "basic".into(),
    }
}

#[test]
fn emitted_personal_fields_travel_apart_from_data() {
    let then = AggregateTest::<Member>::with_id("m-1").when(Command::Join { name: "Ann".into() });
    let events = then.stored_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, json!({"member": "m-1", "plan": "basic"}));
    assert_eq!(events[0].subject_id.as_deref(), Some("m-1"));
    assert_eq!(events[0].personal_data, Some(json!({"name": "Ann"})));
    // Applied through the merge: the state has the name.
    then.then_expect_events([joined("m-1", "Ann")])
        .then_expect_state(json!({"id": "m-1", "name": "Ann", "renames": 0}));
}

#[test]
fn forgetting_rebuilds_the_state_without_personal_data() {
    AggregateTest::<Member>::with_id("m-1")
        .given([joined("m-1", "Ann")])
        .when(Command::Rename {
            name: "Ann B".into(),
        })
        .then_expect_events([Event::Renamed {
            member: "m-1".into(),
            name: Some("Ann B".into()),
        }])
        .then_expect_state(json!({"id": "m-1", "name": "Ann B", "renames": 1}))
        .forget("m-1")
        // The events are still there (one rename), their names are not.
        .then_expect_state(json!({"id": "m-1", "name": null, "renames": 1}));
}

#[test]
fn forgetting_another_subject_changes_nothing() {
    given::<Member>([joined("test-1", "Ann")])
        .forget("m-2")
        .then_expect_state(json!({"id": "test-1", "name": "Ann", "renames": 0}));
}

#[test]
#[should_panic(expected = "member: cannot encode Joined event: it carries personal data")]
fn personal_data_without_a_subject_traps() {
    let _ = given::<Member>([]).when(Command::JoinAnonymously { name: "Ann".into() });
}

#[test]
#[should_panic(expected = "personal data of the forgotten subject \"m-1\"")]
fn personal_data_of_a_forgotten_subject_is_refused() {
    AggregateTest::<Member>::with_id("m-1")
        .given([joined("m-1", "Ann")])
        .forget("m-1")
        .when(Command::Rename {
            name: "Ann B".into(),
        })
        .then_expect_events([Event::Renamed {
            member: "m-1".into(),
            name: Some("Ann B".into()),
        }]);
}

#[derive(Debug, Serialize, Deserialize)]
enum Misdeclared {
    Joined { member: String, email: String },
}

impl DomainEvent for Misdeclared {
    const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("Joined", &["e-mail"])];
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MisdeclaredMember;

impl Aggregate for MisdeclaredMember {
    const NAME: &'static str = "misdeclared";
    type Command = Command;
    type Event = Misdeclared;

    fn handle(&self, _: Command, _: &CommandContext) -> Result<Vec<Misdeclared>, Rejection> {
        Ok(vec![])
    }

    fn apply(&mut self, _: Misdeclared) {}
}

#[test]
#[should_panic(expected = "PERSONAL_FIELDS names \"e-mail\", which is not a field of Joined")]
fn personal_fields_must_name_real_fields() {
    given::<MisdeclaredMember>([Misdeclared::Joined {
        member: "m-1".into(),
        email: "a@b".into(),
    }]);
}

// ---- a projection --------------------------------------------------------------------------

#[derive(Debug)]
struct Directory;

impl Projection for Directory {
    const NAME: &'static str = "directory";
    type Event = Event;

    fn handle(
        event: Event,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
    ) -> Result<(), Error> {
        let (Event::Joined { name, .. } | Event::Renamed { name, .. }) = event;
        let row = json!({"name": name, "shredded": meta.shredded});
        model.put_json(&format!("member/{}", meta.stream_id), &row)
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        if name != "get" {
            return Err(QueryError::unknown(name));
        }
        let id: String = args.parse()?;
        Ok(model
            .get_json::<Value>(&format!("member/{id}"))?
            .unwrap_or(Value::Null))
    }
}

#[test]
fn projections_read_personal_data_until_the_subject_is_forgotten() {
    let test = ProjectionTest::<Directory>::new()
        .given("m-1", [joined("m-1", "Ann")])
        .given("m-2", [joined("m-2", "Bo")]);
    assert_eq!(
        test.query_ok("get", json!("m-1")),
        json!({"name": "Ann", "shredded": false})
    );
    let test = test.forget("m-1");
    assert_eq!(
        test.query_ok("get", json!("m-1")),
        json!({"name": null, "shredded": true})
    );
    assert_eq!(
        test.query_ok("get", json!("m-2")),
        json!({"name": "Bo", "shredded": false})
    );
    // Nothing of Ann is left anywhere in the read model.
    assert!(test.read_model().values().all(|v| !v.contains("Ann")));
    assert_eq!(test.position(), 2);
}
