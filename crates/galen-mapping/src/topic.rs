//! MQTT topic filters (`+` one level, `#` all remaining levels), as in MQTT 3.1.1 section 4.7.

use std::fmt;

/// Longest filter accepted, in bytes.
const MAX_FILTER_BYTES: usize = 1024;

/// A parsed topic filter such as `galen/v1/devices/+/ble`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicFilter {
    levels: Vec<Level>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`
    One,
    /// `#`, always last.
    Rest,
}

impl TopicFilter {
    /// Parses a filter; `+` and `#` must fill a whole level and `#` must be the last level.
    pub(crate) fn parse(text: &str) -> Result<TopicFilter, String> {
        if text.is_empty() {
            return Err("empty topic filter".to_owned());
        }
        if text.len() > MAX_FILTER_BYTES {
            return Err(format!("topic filter longer than {MAX_FILTER_BYTES} bytes"));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (index, part) in parts.into_iter().enumerate() {
            let level = match part {
                "+" => Level::One,
                "#" if index == last => Level::Rest,
                "#" => return Err("'#' must be the last level of a topic filter".to_owned()),
                exact if exact.contains(['+', '#']) => {
                    return Err(format!(
                        "level {exact:?}: '+' and '#' must stand alone between slashes"
                    ));
                }
                exact => Level::Exact(exact.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            levels,
            text: text.to_owned(),
        })
    }

    /// Whether `topic` matches. As in MQTT, a wildcard in the first level does not match a topic
    /// starting with `$` (broker-internal topics), and `a/#` also matches `a`.
    pub(crate) fn matches(&self, topic: &str) -> bool {
        let mut topic_levels = topic.split('/');
        for (index, level) in self.levels.iter().enumerate() {
            let internal = index == 0 && topic.starts_with('$');
            match level {
                Level::Rest => return !internal,
                Level::One => match topic_levels.next() {
                    Some(_) if !internal => {}
                    _ => return false,
                },
                Level::Exact(exact) => {
                    if topic_levels.next() != Some(exact.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filter: &str, topic: &str, expect: bool) {
        let parsed = TopicFilter::parse(filter).expect("valid filter");
        assert_eq!(parsed.matches(topic), expect, "{filter} against {topic}");
    }

    #[test]
    fn wildcards_match_as_in_mqtt() {
        check("galen/v1/devices/+/ble", "galen/v1/devices/GW-1/ble", true);
        check(
            "galen/v1/devices/+/ble",
            "galen/v1/devices/GW-1/wifi",
            false,
        );
        check("galen/v1/devices/+/ble", "galen/v1/devices/ble", false);
        check("galen/v1/devices/+/ble", "galen/v1/devices/a/b/ble", false);
        check(
            "galen/v1/devices/+/ble",
            "galen/v1/devices/GW-1/ble/x",
            false,
        );
        check("galen/#", "galen", true);
        check("galen/#", "galen/a/b/c", true);
        check("galen/#", "other/a", false);
        check("#", "anything/at/all", true);
        check("#", "$SYS/broker", false);
        check("+/x", "$SYS/x", false);
        check("$SYS/+", "$SYS/x", true);
        check("a/+", "a/", true);
        check("a/b", "a/b", true);
        check("a/b", "a/b/", false);
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in ["", "a/#/b", "a/b#", "a+/b", "#/a"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
    }
}
