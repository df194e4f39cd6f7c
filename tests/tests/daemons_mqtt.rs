//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): mosquitto, MQTT.

use std::{fs, process::Command, time::Duration};

use iotwatch_tests::{daemons::*, privileged_test};

// mosquitto: anonymous and authenticated CONNECTs, PUBLISH; the password never logged.
privileged_test! {
    fn mosquitto_mqtt_connect_and_publish() {
        const PASSWORD: &str = "Zq7-iwd4-secret-pw";
        let lab = lab("iwd4", false);
        let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
        let dir = Workdir::new("iwd4");
        let passwd = dir.text("mosquitto.passwd");
        let out = Command::new("mosquitto_passwd")
            .args(["-c", "-b", &passwd, "camera", PASSWORD])
            .output()
            .expect("mosquitto_passwd");
        assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
        let bip = d2.ip.to_string();
        let conf = dir.config("mosquitto.conf", "mosquitto.conf", &[("@LISTEN_IP@", &bip)]);
        let (agent, events) = start_agent(&lab, &dir, 19484);
        let mut broker = Daemon::spawn(&lab, &d2.ns, &dir, "mosquitto", &["mosquitto", "-c", &conf]);
        wait_listening(&lab, &d2.ns, "-t", 1883, &mut broker);

        let pubargs = |id: &'static str, topic: &'static str, msg: &'static str| {
            vec![
                "mosquitto_pub",
                "-h",
                bip.as_str(),
                "-p",
                "1883",
                "-V",
                "mqttv311",
                "-q",
                "0",
                "-i",
                id,
                "-t",
                topic,
                "-m",
                msg,
            ]
        };
        run(&lab, &d1.ns, 10, &pubargs("iwd-anon", "home/iwd/temperature", "21.5"));
        let mut with_creds = pubargs("iwd-auth", "home/iwd/door", "open!");
        with_creds.extend(["-u", "camera", "-P", PASSWORD]);
        run(&lab, &d1.ns, 10, &with_creds);

        let a = d1.mac.as_str();
        let from_a = |e: &Event, t: &str| {
            e.kind() == "mqtt"
                && same(e.s("src_mac"), a)
                && num_is(e.n("dst_port"), 1883.0)
                && same(e.s("packet_type"), t)
        };
        let events_path = events.clone();
        wait_events(
            &events,
            Duration::from_secs(15),
            &["mqtt"],
            &[
                ("mqtt CONNECT client_id iwd-anon without credentials", &|e| {
                    from_a(e, "CONNECT")
                        && same(e.s("client_id"), "iwd-anon")
                        && e.v["has_credentials"].as_bool() == Some(false)
                }),
                ("mqtt CONNECT client_id iwd-auth with credentials", &|e| {
                    from_a(e, "CONNECT")
                        && same(e.s("client_id"), "iwd-auth")
                        && e.v["has_credentials"].as_bool() == Some(true)
                }),
                ("mqtt PUBLISH topic home/iwd/temperature, 4 payload bytes", &|e| {
                    from_a(e, "PUBLISH")
                        && same(e.s("topic"), "home/iwd/temperature")
                        && num_is(e.n("payload_bytes"), 4.0)
                }),
                ("mqtt PUBLISH topic home/iwd/door, 5 payload bytes", &|e| {
                    from_a(e, "PUBLISH") && same(e.s("topic"), "home/iwd/door") && num_is(e.n("payload_bytes"), 5.0)
                }),
            ],
        );
        let log = fs::read_to_string(&events_path).expect("event log");
        assert!(!log.contains(PASSWORD), "the MQTT password appears in the event log:\n{log}");
        let (_, body) = report(&agent);
        assert!(!body.contains(PASSWORD), "the MQTT password appears in the report");
        assert!(!agent.stderr_text().contains(PASSWORD), "the MQTT password appears in the agent's output");
        let broker_log = broker.output();
        assert!(
            broker_log.contains("iwd-auth") && broker_log.contains("u'camera'"),
            "mosquitto accepted the user: {broker_log}"
        );
        check_metrics(&agent, &[(a, "mqtt")]);
        broker.check_alive();
    }
}
