//! Articles: the classic three-stage pipeline. RSS-like JSON articles come in (`--input`,
//! default `articles`); they are normalised (URL without tracking parameters, fragment or
//! trailing slash, lower-case host; title whitespace collapsed; tags lower-cased), re-keyed by
//! URL and de-duplicated (the first article per URL wins, remembered in a state store), written
//! to `articles-normalized`, and recommended to the users subscribed to any of their tags (a
//! global table from `--subscriptions`, default `subscriptions`: tag -> JSON list of users),
//! one recommendation per user and article to `--output` (default `recommendations`), keyed by
//! user. Articles that are not JSON go to `articles-dlq` with headers saying why.

#[path = "shared/cli.rs"]
mod cli;

use serde::{Deserialize, Serialize};
use sluice_streams::{
    DeserializationPolicy, KeyValueStore, Processor, ProcessorContext, Record, Serdes, Stores,
    StreamsBuilder,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Article {
    url: String,
    title: String,
    #[serde(default)]
    feed: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Recommendation {
    user: String,
    url: String,
    title: String,
    because: Vec<String>,
}

fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or(url);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    let params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("utm_"))
        .collect();
    let mut out = format!("{}://{}", scheme.to_lowercase(), host.to_lowercase());
    if !path.is_empty() {
        out.push('/');
        out.push_str(path);
    }
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn normalize(a: Article) -> Article {
    let mut tags: Vec<String> = a
        .tags
        .iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    Article {
        url: normalize_url(&a.url),
        title: a.title.split_whitespace().collect::<Vec<_>>().join(" "),
        feed: a.feed.trim().to_string(),
        tags,
    }
}

/// Forwards the first article per URL (the key) and drops later ones.
struct FirstPerUrl {
    seen: Option<KeyValueStore<String, i64>>,
}

impl Processor<String, Article, String, Article> for FirstPerUrl {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, Article>,
    ) -> sluice_streams::Result<()> {
        self.seen = Some(ctx.key_value_store("seen-urls")?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, Article>,
        record: Record<String, Article>,
    ) -> sluice_streams::Result<()> {
        let seen = self.seen.as_ref().expect("initialized");
        if seen.get(&record.key)?.is_some() {
            return Ok(());
        }
        seen.put(&record.key, &record.timestamp)?;
        ctx.forward(record)
    }
}

fn main() {
    let args = cli::parse("articles", "recommendations", &["subscriptions"]);
    let builder = StreamsBuilder::new();
    builder.add_state_store(Stores::key_value(
        "seen-urls",
        Serdes::string(),
        Serdes::i64(),
    ));
    let subscriptions = builder.global_table(
        &args.extra("subscriptions", "subscriptions"),
        Serdes::string(),
        Serdes::json::<Vec<String>>(),
        "subscriptions",
    );
    let unique = builder
        .stream(
            &args.input,
            Serdes::optional(Serdes::bytes()),
            Serdes::json::<Article>(),
        )
        .map_values(normalize)
        .select_key(|_, a| a.url.clone())
        .with_serdes(Serdes::string(), Serdes::json())
        .repartition(Some("by-url"), None)
        .process(|| FirstPerUrl { seen: None }, &["seen-urls"])
        .with_serdes(Serdes::string(), Serdes::json::<Article>());
    unique.to("articles-normalized");
    unique
        .flat_map(|_, a: Article| {
            a.tags
                .clone()
                .into_iter()
                .map(move |t| (t, a.clone()))
                .collect::<Vec<_>>()
        })
        .join_global(
            &subscriptions,
            |tag: &String, _| tag.clone(),
            |a: &Article, users: &Vec<String>| (a.clone(), users.clone()),
        )
        .flat_map(|tag: String, (a, users): (Article, Vec<String>)| {
            users
                .into_iter()
                .map(|user| {
                    let rec = Recommendation {
                        user: user.clone(),
                        url: a.url.clone(),
                        title: a.title.clone(),
                        because: vec![tag.clone()],
                    };
                    (format!("{user}|{}", a.url), rec)
                })
                .collect::<Vec<_>>()
        })
        .with_serdes(Serdes::string(), Serdes::json::<Recommendation>())
        // One recommendation per user and article, whatever number of its tags they follow.
        .group_by_key()
        .reduce(
            |mut first: Recommendation, later: Recommendation| {
                first.because.extend(later.because);
                first
            },
            sluice_streams::Materialized::named("recommended"),
        )
        .to_stream()
        .filter(|_, rec| rec.because.len() == 1)
        .map(|_, rec: Recommendation| (rec.user.clone(), rec))
        .with_serdes(Serdes::string(), Serdes::json())
        .to(&args.output);
    let config = args
        .config()
        .deserialization_policy(DeserializationPolicy::DeadLetter(
            "articles-dlq".to_string(),
        ));
    cli::run(builder, config)
}
