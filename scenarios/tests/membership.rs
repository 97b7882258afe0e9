//! The SWIM adapter and the membership properties catch what they claim to: a bound too
//! tight fails with evidence, a crash of a node nobody met yet owes no verdict, a node cut off one way is a (true-positive) false death,
//! `repeat` expands, and a `slow` node changes the run without losing anything.

use kvs_scenarios::{RunOptions, RunReport, Scenario, run_scenario};

fn run(yaml: &str, seed: u64) -> RunReport {
    let scenario = Scenario::parse(yaml).expect("scenario parses");
    run_scenario(&scenario, RunOptions { seed, trace: None }).expect("scenario runs")
}

fn swim(nodes: usize, timeline: &str, properties: &str) -> String {
    format!(
        "name: t\nengine: model\nduration: 20s\n\
         cluster: {{nodes: {nodes}, protocol: swim}}\n\
         timeline: {timeline}\nproperties: {properties}\n"
    )
}

#[test]
fn a_crash_is_detected_and_a_too_tight_bound_fails() {
    let ok = swim(
        8,
        "[{at: 8s, crash: [n4]}]",
        "{always: [no_false_deaths, {failure_detected: {within: 3s}}]}",
    );
    let report = run(&ok, 1);
    assert!(report.violation.is_none(), "{:?}", report.violation);
    let took = report
        .measurements
        .iter()
        .find(|(k, _)| k == "failure_detected.crash_to_dead_s")
        .map(|(_, v)| *v)
        .expect("measured");
    assert!(took > 0.0 && took <= 3.0, "{took}");
    let tight = ok.replace("within: 3s", "within: 100ms");
    let v = run(&tight, 1).violation.expect("fails");
    assert_eq!(v.property, "failure_detected");
    assert!(v.evidence.contains("n4 crashed"), "{}", v.evidence);
}

/// The README's late join (a node held down from 0 s, then started): nobody knew its
/// first life, so nobody owes a verdict on it (found by an audit: the idiom failed
/// `failure_detected`); a crash of that node once it joined is judged as any other.
#[test]
fn a_crash_before_anyone_met_the_node_is_not_judged_and_a_later_one_is() {
    let late_join = swim(
        8,
        "[{at: 0s, crash: [n8]}, {at: 10s, restart: [n8]}]",
        "{always: [{failure_detected: {within: 4s}}]}",
    );
    for seed in 1..=3 {
        let report = run(&late_join, seed);
        assert!(
            report.violation.is_none(),
            "seed {seed}: {:?}",
            report.violation
        );
    }
    let crash_after_joining = late_join
        .replace(
            "{at: 10s, restart: [n8]}",
            "{at: 2s, restart: [n8]}, {at: 8s, crash: [n8]}",
        )
        .replace("within: 4s", "within: 100ms");
    let v = run(&crash_after_joining, 1).violation.expect("judged");
    assert!(v.evidence.contains("n8 crashed"), "{}", v.evidence);
}

#[test]
fn a_node_that_cannot_send_is_a_false_death() {
    let cut = swim(
        6,
        "[{at: 5s, partition_oneway: {from: [n2], to: all}}]",
        "{always: [no_false_deaths]}",
    );
    let v = run(&cut, 1)
        .violation
        .expect("n2 is declared dead while running");
    assert_eq!(v.property, "no_false_deaths");
    assert!(v.evidence.contains("n2 dead"), "{}", v.evidence);
}

#[test]
fn repeat_expands_into_sorted_steps() {
    let yaml = swim(
        4,
        "[{at: 1s, repeat: {every: 2s, times: 3, steps: [{at: 0s, partition: [[n1]]}, \
         {at: 500ms, heal: all}]}}, {at: 2s, crash: [n3]}]",
        "{}",
    );
    let s = Scenario::parse(&yaml).expect("parses");
    let times: Vec<u128> = s.timeline.iter().map(|st| st.at.as_millis()).collect();
    assert_eq!(times, vec![1000, 1500, 2000, 3000, 3500, 5000, 5500]);
    assert_eq!(s.quiesce_at().as_millis(), 5500);
}

#[test]
fn a_slow_node_delays_its_handling_but_loses_nothing() {
    let base = "name: s\nengine: model\nduration: 10s\n\
                cluster: {nodes: 4, protocol: ping_pong, config: {interval: 100ms}}\n";
    let plain = run(&format!("{base}timeline: []\n"), 3);
    let slow = run(
        &format!(
            "{base}timeline: [{{at: 1s, slow: {{nodes: [n1], delay: \
             {{min: 50ms, mean: 100ms, max: 300ms}}}}}}, {{at: 8s, unslow: [n1]}}]\n"
        ),
        3,
    );
    assert!(slow.violation.is_none());
    assert_ne!(plain.digest, slow.digest);
    assert_eq!(plain.counts.sent, slow.counts.sent);
    assert_eq!(slow.counts.dropped.values().sum::<u64>(), 0);
}

/// `loss_rate` and `delivered_at_least` report what they measured (`--report` showed a
/// bare line for them; found by an audit of kvs-sim).
#[test]
fn loss_rate_and_delivered_at_least_report_their_figures() {
    let yaml = "name: t\nengine: model\nduration: 10s\n\
                cluster: {nodes: 4, protocol: ping_pong, config: {interval: 100ms}}\n\
                network: {default: {loss: 0.3}}\n\
                properties: {final: [{loss_rate: {min: 0.2, max: 0.4}}, {delivered_at_least: {count: 100}}]}\n";
    let report = run(yaml, 1);
    assert!(report.violation.is_none(), "{:?}", report.violation);
    let figure = |name: &str| {
        report
            .measurements
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} not measured: {:?}", report.measurements))
    };
    let rate = figure("loss_rate.rate");
    assert!((0.2..=0.4).contains(&rate), "{rate}");
    assert!(figure("delivered_at_least.delivered") >= 100.0);
}
