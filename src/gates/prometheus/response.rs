//! Parsing `/api/v1/query` answers into the one number a gate judges. Every part of
//! an answer that reaches a message is an [`excerpt`].

use serde::Deserialize;
use serde_json::Value;

use super::{QueryError, excerpt};
use crate::gates::answer::MAX_EXCERPT;

/// Series labels listed in a "several series" error before it is cut short.
const LISTED_SERIES: usize = 3;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

/// Reads an instant-query answer: `Ok(None)` is an empty vector (no data),
/// `Ok(Some(v))` the single value, which may be NaN or infinite.
///
/// A `status: error` body wins over the HTTP status, because Prometheus reports
/// bad PromQL as HTTP 400 with its explanation in `error`.
pub fn parse(http_status: u16, body: &[u8]) -> Result<Option<f64>, QueryError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) if !(200..300).contains(&http_status) => {
            return Err(QueryError::Http {
                status: http_status,
                body: quote(body),
            });
        }
        Err(e) => {
            return Err(QueryError::Malformed(excerpt(&format!(
                "not a Prometheus API answer: {e}"
            ))));
        }
    };
    if envelope.status == "error" {
        return Err(QueryError::Rejected {
            error_type: excerpt(envelope.error_type.as_deref().unwrap_or("unknown")),
            error: excerpt(&envelope.error.unwrap_or_default()),
        });
    }
    if !(200..300).contains(&http_status) {
        return Err(QueryError::Http {
            status: http_status,
            body: quote(body),
        });
    }
    if envelope.status != "success" {
        return Err(QueryError::Malformed(format!(
            "unknown status {:?}",
            excerpt(&envelope.status)
        )));
    }
    let data = envelope
        .data
        .ok_or_else(|| QueryError::Malformed("success without data".into()))?;
    match data.result_type.as_str() {
        "vector" => vector(&data.result),
        "scalar" => sample_value(&data.result).map(Some),
        other => Err(QueryError::UnsupportedResult(excerpt(other))),
    }
}

fn vector(result: &Value) -> Result<Option<f64>, QueryError> {
    let series = result
        .as_array()
        .ok_or_else(|| QueryError::Malformed("vector result is not a list".into()))?;
    match series.as_slice() {
        [] => Ok(None),
        [one] => {
            let value = one
                .get("value")
                .ok_or_else(|| QueryError::Malformed("vector sample without value".into()))?;
            sample_value(value).map(Some)
        }
        many => Err(QueryError::ManySeries {
            count: many.len(),
            examples: many
                .iter()
                .take(LISTED_SERIES)
                .map(|s| labels(s.get("metric")))
                .collect(),
        }),
    }
}

/// `[<unix time>, "<value>"]`, where the value is a Go float: `NaN`, `+Inf`, `-Inf` or a number.
fn sample_value(pair: &Value) -> Result<f64, QueryError> {
    let text = pair
        .as_array()
        .and_then(|p| p.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            QueryError::Malformed(format!(
                "sample is not [time, \"value\"]: {}",
                excerpt(&pair.to_string())
            ))
        })?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| {
            QueryError::Malformed(format!("sample value {:?} is not a number", excerpt(text)))
        }),
    }
}

/// `{a="1", b="2"}` for messages.
fn labels(metric: Option<&Value>) -> String {
    let pairs: Vec<String> = metric
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str()
                            .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    excerpt(&format!("{{{}}}", pairs.join(", ")))
}

fn quote(body: &[u8]) -> String {
    // A body larger than any excerpt is cut before it is decoded.
    let head = &body[..body.len().min(4 * MAX_EXCERPT)];
    excerpt(&String::from_utf8_lossy(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<Option<f64>, QueryError> {
        parse(200, body.as_bytes())
    }

    fn vector_of(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(r#"{{"metric":{{"namespace":"cell-{i}"}},"value":[1700000000.5,"{v}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        )
    }

    #[test]
    fn empty_vector_is_no_data() {
        assert_eq!(ok(&vector_of(&[])), Ok(None));
    }

    #[test]
    fn one_series_is_its_value() {
        assert_eq!(ok(&vector_of(&["0.0125"])), Ok(Some(0.0125)));
        assert_eq!(ok(&vector_of(&["1e-3"])), Ok(Some(0.001)));
    }

    #[test]
    fn special_floats_are_kept_for_the_judge() {
        assert!(ok(&vector_of(&["NaN"])).unwrap().unwrap().is_nan());
        assert_eq!(ok(&vector_of(&["+Inf"])), Ok(Some(f64::INFINITY)));
        assert_eq!(ok(&vector_of(&["-Inf"])), Ok(Some(f64::NEG_INFINITY)));
    }

    #[test]
    fn several_series_are_rejected_with_their_labels() {
        let err = ok(&vector_of(&["1", "2", "3", "4"])).unwrap_err();
        assert_eq!(
            err,
            QueryError::ManySeries {
                count: 4,
                examples: vec![
                    r#"{namespace="cell-0"}"#.into(),
                    r#"{namespace="cell-1"}"#.into(),
                    r#"{namespace="cell-2"}"#.into()
                ],
            }
        );
        assert!(err.to_string().contains("sum(...)"), "{err}");
    }

    #[test]
    fn scalar_is_its_value() {
        let body =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#;
        assert_eq!(ok(body), Ok(Some(42.0)));
    }

    #[test]
    fn string_and_matrix_are_rejected() {
        let string =
            r#"{"status":"success","data":{"resultType":"string","result":[1700000000,"hi"]}}"#;
        assert_eq!(
            ok(string),
            Err(QueryError::UnsupportedResult("string".into()))
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        let err = ok(matrix).unwrap_err();
        assert_eq!(err, QueryError::UnsupportedResult("matrix".into()));
        assert!(err.to_string().contains("instant"), "{err}");
    }

    #[test]
    fn prometheus_errors_carry_its_own_message() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#;
        assert_eq!(
            parse(400, body.as_bytes()),
            Err(QueryError::Rejected {
                error_type: "bad_data".into(),
                error: "1:5: parse error: unexpected end of input".into()
            })
        );
    }

    #[test]
    fn non_json_http_errors_quote_the_body() {
        assert_eq!(
            parse(502, b"  Bad Gateway\n"),
            Err(QueryError::Http {
                status: 502,
                body: "Bad Gateway".into()
            })
        );
        let long = "x".repeat(1000);
        let Err(QueryError::Http { body, .. }) = parse(500, long.as_bytes()) else {
            panic!("expected an HTTP error");
        };
        assert_eq!(body.chars().count(), MAX_EXCERPT);
    }

    #[test]
    fn what_the_answer_says_is_cut_and_cleaned() {
        let error = format!("\x1b[2J{}\nsecond line", "e".repeat(5000));
        let body = serde_json::json!({"status": "error", "errorType": "bad\rdata", "error": error});
        let Err(QueryError::Rejected { error_type, error }) =
            parse(400, body.to_string().as_bytes())
        else {
            panic!("expected a rejection");
        };
        assert_eq!(error_type, "bad data");
        assert_eq!(error.chars().count(), MAX_EXCERPT);
        assert!(!error.chars().any(char::is_control), "{error:?}");

        let huge_label = "v".repeat(5000);
        let series: Vec<String> = (0..3)
            .map(|i| format!(r#"{{"metric":{{"l{i}":"{huge_label}\u0007"}},"value":[1,"1"]}}"#))
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        );
        let err = ok(&body).unwrap_err().to_string();
        let listed = err.split("(series: ").nth(1).expect("series listed");
        assert!(listed.chars().count() <= MAX_EXCERPT + 1, "{listed}");
        assert!(!err.chars().any(char::is_control));
    }

    #[test]
    fn a_success_body_with_an_error_status_is_still_an_error() {
        assert!(matches!(
            parse(503, vector_of(&["1"]).as_bytes()),
            Err(QueryError::Http { status: 503, .. })
        ));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for body in [
            "",
            "{}",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"abc"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":null}}"#,
            r#"{"status":"weird","data":{"resultType":"scalar","result":[1,"1"]}}"#,
        ] {
            assert!(matches!(ok(body), Err(QueryError::Malformed(_))), "{body}");
        }
    }
}
