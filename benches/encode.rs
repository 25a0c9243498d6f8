//! Building one complete request from a call result, against `serde_urlencoded::to_string` on a
//! plain struct holding the same ten values, in the same run.
//!
//! `cargo bench --bench encode` (add `--features signing` for the signed request).
//!
//! "Complete" means everything the worker does before handing a request to a backend: the body
//! encoded under the account's encoding and time zone (field caps checked), then the request
//! with its URL, `Content-Type`, `Authorization`, `webhook-id` and `User-Agent`.

use std::hint::black_box;

use call_result_webhook::{
    CallResult, DeliveryId, PreferencesUpdate,
    encoding::Encoding,
    preferences::Preferences,
    request::{EncodedBody, build_request},
};
use criterion::{Criterion, criterion_group, criterion_main};

/// The product page's sample call, as the dialer hands it in.
fn sample_call() -> CallResult {
    CallResult::builder()
        .campaign_name("Winter Sale")
        .logged_at("2019-06-19T16:11:07Z".parse().expect("a timestamp"))
        .call_start("2019-06-19T15:01:00Z".parse().expect("a timestamp"))
        .call_end("2019-06-19T15:03:00Z".parse().expect("a timestamp"))
        .phone_called("0731051xxx")
        .reference("123")
        .result("Connected")
        .wrap_up_by_name("agent@pinetree.net.au")
        .wrap_up_reason_name("Payment Taken")
        .build()
}

/// The same ten values, already text: what the baseline serializes.
#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct PlainPage {
    CampaignName: String,
    LogDateTime: String,
    CallStart: String,
    CallEnd: String,
    PhoneCalled: String,
    Reference: String,
    Result: String,
    ResultNotes: String,
    WrapUpByName: String,
    WrapUpReasonName: String,
}

fn plain_page() -> PlainPage {
    PlainPage {
        CampaignName: "Winter Sale".into(),
        LogDateTime: "2019-06-19T16:11:07".into(),
        CallStart: "2019-06-20 01:01:00".into(),
        CallEnd: "2019-06-20 01:03:00".into(),
        PhoneCalled: "0731051xxx".into(),
        Reference: "123".into(),
        Result: "Connected".into(),
        ResultNotes: String::new(),
        WrapUpByName: "agent@pinetree.net.au".into(),
        WrapUpReasonName: "Payment Taken".into(),
    }
}

fn update(encoding: Encoding) -> PreferencesUpdate {
    PreferencesUpdate::new()
        .enabled(true)
        .url("https://crm.acme.example/hooks/calls")
        .credentials("dialer", "s3cret")
        .time_zone("Australia/Brisbane")
        .encoding(encoding)
}

fn preferences(encoding: Encoding) -> Preferences {
    Preferences::from_update(update(encoding)).expect("valid preferences")
}

fn build(c: &mut Criterion) {
    let call = sample_call();
    let id = DeliveryId::new("msg_01J9Z3K7Q8X4N2M5P6R7S8T9VW").expect("a valid id");
    let form = preferences(Encoding::Form);
    let json = preferences(Encoding::Json);
    let page = plain_page();

    // The two must carry the same bytes, or the comparison means nothing.
    let ours = EncodedBody::encode(&call, &form).expect("encodes");
    let theirs = serde_urlencoded::to_string(&page).expect("encodes");
    assert_eq!(ours.bytes().as_ref(), theirs.as_bytes());

    let mut group = c.benchmark_group("build_request");
    group.bench_function("baseline_serde_urlencoded", |b| {
        b.iter(|| serde_urlencoded::to_string(black_box(&page)).expect("encodes"))
    });
    group.bench_function("form", |b| {
        b.iter(|| {
            let prefs = &form;
            let body = EncodedBody::encode(black_box(&call), prefs).expect("encodes");
            build_request(prefs, black_box(&id), &body).expect("builds")
        })
    });
    group.bench_function("json", |b| {
        b.iter(|| {
            let prefs = &json;
            let body = EncodedBody::encode(black_box(&call), prefs).expect("encodes");
            build_request(prefs, black_box(&id), &body).expect("builds")
        })
    });
    {
        // The account signs: build_request adds webhook-timestamp and webhook-signature.
        let secret: call_result_webhook::signing::SigningSecret =
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                .parse()
                .expect("a valid secret");
        let signed = Preferences::from_update(update(Encoding::Form).signing_secret(secret))
            .expect("valid preferences");
        group.bench_function("form_signed", |b| {
            b.iter(|| {
                let prefs = &signed;
                let body = EncodedBody::encode(black_box(&call), prefs).expect("encodes");
                build_request(prefs, black_box(&id), &body).expect("builds")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
