//! The properties of one run, built from the scenario's `properties` and judged by the
//! engine: `always` on every event, `eventually` from `quiesce_at` until their bound,
//! `final` at the end.

use std::time::Duration;

use serde_yaml::Value;

use crate::properties::{self, Phase, Property, Violation, World};
use crate::protocol::ProtocolFactory;
use crate::spec::PropertyEntry;
use crate::{Record, Scenario, SimError, duration};

/// How often `eventually` properties are polled (virtual time).
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

type Boxed<P> = Box<dyn Property<P>>;

struct Eventual<P> {
    name: String,
    prop: Boxed<P>,
    within: Duration,
    deadline: Duration,
    done: bool,
}

/// The built properties.
pub(crate) struct Checks<P> {
    always: Vec<(String, Boxed<P>)>,
    eventually: Vec<Eventual<P>>,
    at_end: Vec<(String, Boxed<P>)>,
}

fn build<F: ProtocolFactory>(
    factory: &F,
    entry: &PropertyEntry,
    phase: Phase,
) -> Result<(String, Value, Boxed<F::Node>), SimError> {
    let (name, args) = entry.parts()?;
    let mut own_args = args.clone();
    // `within` is the runner's for `eventually`; other phases' properties may use it.
    if let (Phase::Eventually, Value::Mapping(map)) = (phase, &mut own_args) {
        map.remove("within");
        if map.is_empty() {
            own_args = Value::Null;
        }
    }
    let prop = match factory.property(&name, phase, &own_args)? {
        Some(p) => p,
        None => properties::generic(&name, phase, &own_args)?,
    };
    Ok((name, args, prop))
}

impl<P: 'static> Checks<P> {
    /// Builds every property of `scenario`.
    pub(crate) fn new<F: ProtocolFactory<Node = P>>(
        factory: &F,
        scenario: &Scenario,
    ) -> Result<Self, SimError> {
        let props = &scenario.properties;
        let mut checks = Self {
            always: Vec::new(),
            eventually: Vec::new(),
            at_end: Vec::new(),
        };
        for entry in &props.always {
            let (name, _, prop) = build(factory, entry, Phase::Always)?;
            checks.always.push((name, prop));
        }
        for entry in &props.eventually {
            let (name, args, prop) = build(factory, entry, Phase::Eventually)?;
            let within = properties::within(&name, &args)?;
            let deadline = scenario.quiesce_at() + within;
            if deadline > scenario.duration {
                return Err(SimError::invalid(format!(
                    "eventually `{name}`: quiesce_at + within ({}) is after duration",
                    duration::show(deadline)
                )));
            }
            checks.eventually.push(Eventual {
                name,
                prop,
                within,
                deadline,
                done: false,
            });
        }
        for entry in &props.at_end {
            let (name, _, prop) = build(factory, entry, Phase::Final)?;
            checks.at_end.push((name, prop));
        }
        Ok(checks)
    }

    /// Whether any `eventually` property exists.
    pub(crate) fn has_eventually(&self) -> bool {
        !self.eventually.is_empty()
    }

    /// Judges one event against every `always` property.
    pub(crate) fn on_event(&mut self, world: &World<'_, P>, rec: &Record) -> Result<(), Violation> {
        for (name, prop) in &mut self.always {
            prop.on_event(world, rec).map_err(|evidence| Violation {
                property: name.clone(),
                evidence,
            })?;
        }
        Ok(())
    }

    /// Polls the pending `eventually` properties; returns when to poll next (`None`: all
    /// hold).
    pub(crate) fn poll_eventually(
        &mut self,
        world: &World<'_, P>,
    ) -> Result<Option<Duration>, Violation> {
        let now = world.now;
        let mut next: Option<Duration> = None;
        for ev in self.eventually.iter_mut().filter(|e| !e.done) {
            match ev.prop.check(world) {
                Ok(()) => ev.done = true,
                Err(evidence) if now >= ev.deadline => {
                    return Err(Violation {
                        property: ev.name.clone(),
                        evidence: format!(
                            "not true within {} of quiesce: {evidence}",
                            duration::show(ev.within)
                        ),
                    });
                }
                Err(_) => {
                    let at = (now + CHECK_EVERY).min(ev.deadline);
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        Ok(next)
    }

    /// Judges the `final` properties (and any `eventually` never judged true).
    pub(crate) fn at_end(&mut self, world: &World<'_, P>) -> Result<(), Violation> {
        if let Some(ev) = self.eventually.iter().find(|e| !e.done) {
            return Err(Violation {
                property: ev.name.clone(),
                evidence: "the run ended before it held".into(),
            });
        }
        for (name, prop) in self.always.iter_mut().chain(&mut self.at_end) {
            prop.check(world).map_err(|evidence| Violation {
                property: name.clone(),
                evidence,
            })?;
        }
        Ok(())
    }

    /// Every property's measured figures, named `property.figure`.
    pub(crate) fn measurements(&self) -> Vec<(String, f64)> {
        let always = self.always.iter().map(|(n, p)| (n, p));
        let eventually = self.eventually.iter().map(|e| (&e.name, &e.prop));
        let at_end = self.at_end.iter().map(|(n, p)| (n, p));
        always
            .chain(eventually)
            .chain(at_end)
            .flat_map(|(name, prop)| {
                prop.measurements()
                    .into_iter()
                    .map(move |(figure, value)| (format!("{name}.{figure}"), value))
            })
            .collect()
    }
}
