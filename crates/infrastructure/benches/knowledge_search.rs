//! Knowledge search latency (p50, p99, mean) through `match_knowledge` on the Supabase
//! schema with its HNSW index, against a baseline measured in the same run: the same query,
//! as the same tenant, forced to an exact scan; and the HNSW side's recall@10 against that
//! exact answer. `scripts/bench-knowledge.sh` runs it; results and method are in
//! docs/benchmarks.md.
//!
//! A plain load loop (harness = false). Per corpus size it creates a fresh database, applies
//! the test bootstrap and every migration of migrations/supabase/ (read at run time, so a
//! migration added later is measured too), loads clustered 384-dimension embeddings for two
//! tenants as the superuser, builds the HNSW index the migrations define, and then searches
//! as each tenant the way the service does (`set local role authenticated`, the tenant
//! context, `match_knowledge`). For every query both sides run back to back, in alternating
//! order, so drift on the shared machine hits both. Without `--bench` (as `cargo test
//! --all-targets` and nextest run it) it does nothing.
//!
//! Environment: `SBA_BENCH_KNOWLEDGE_SIZES` (chunk counts, default `10000,100000`),
//! `SBA_BENCH_QUERIES` (queries per tenant, default 200); for comparisons with another schema,
//! `SBA_BENCH_MIGRATIONS_UNTIL` (a migration version such as `20261201000000`: later
//! migrations are left out) and `SBA_BENCH_EXTRA_SQL` (run after the migrations, e.g. an
//! `alter function`); `SBA_BENCH_SHARED_SESSIONS` (`large-first` or `small-first`: both
//! tenants search on the same pair of connections, one after the other, as on a pool that
//! serves every tenant; by default each tenant has connections of its own);
//! `SBA_BENCH_KEEP_DATABASE=1` keeps each corpus's database (for `explain`) instead of
//! dropping it, and prints its URL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "benchmark binary: fails by panicking, statistics on counts"
)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sba_infrastructure::internal_store::test_support::{ADMIN_URL_VAR, admin_url, fresh_postgres_url};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement,
    TransactionTrait, Value,
};
use uuid::Uuid;

const DIMENSION: usize = 384;
const TOP_K: usize = 10;
/// Chunks per cluster on average: 100 clusters for 10k chunks, 1,000 for 100k.
const CHUNKS_PER_CLUSTER: usize = 100;
/// Standard deviation of the Gaussian noise per component before normalising: a noise of
/// norm ≈ 0.78, so a chunk's cosine similarity is ≈ 0.79 to its centroid and ≈ 0.62 to
/// another chunk of its cluster, ≈ 0 ± 0.05 to the rest.
const NOISE: f64 = 0.04;
const CHUNKS_PER_DOCUMENT: usize = 20;
/// Every tenth document belongs to the small tenant (10 % of the chunks), the rest to the
/// large one; chunks pick their cluster independently, so both tenants are in every cluster.
const SMALL_TENANT_EVERY: usize = 10;
const INSERT_ROWS: usize = 500;
const WARMUP_QUERIES: usize = 20;
const DATA_SEED: u64 = 0x5BA_0384;
const QUERY_SEED: u64 = 0x5BA_0385;
/// Enough for pgvector to build the 100k graph in memory: with the server's 64 MB the graph
/// stopped fitting after about 28,000 rows and the build took 91 s instead of 27 s.
const BUILD_MAINTENANCE_WORK_MEM: &str = "512MB";

/// The two sides of one search.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Hnsw,
    Exact,
}

impl Side {
    /// What the transaction sets after `set local role authenticated`. The HNSW side runs as
    /// the service does; the exact side cannot use the HNSW index (it has no bitmap scans, so
    /// `enable_indexscan = off` leaves a sequential or tenant-index scan and a sort) and runs
    /// in one process, as the HNSW side does, so the ratio compares work, not free cores.
    const fn settings(self) -> &'static str {
        match self {
            Self::Hnsw => "set local role authenticated",
            Self::Exact => {
                "set local role authenticated; set local enable_indexscan = off; \
                 set local max_parallel_workers_per_gather = 0"
            }
        }
    }
}

/// What the service runs (the adapter reads every column).
const SEARCH_SQL: &str = "select * from match_knowledge($1::vector, 10, -1, '{}')";

/// One connection per side. Plans cached in a session (sqlx's prepared statements, and
/// PL/pgSQL's plan of the query inside `match_knowledge`) follow neither later changes of
/// `enable_indexscan` nor the tenant: on one shared connection a generic plan made for one
/// side could run for the other, and one made for one tenant does run for the next
/// (docs/benchmarks.md), so by default each tenant gets connections of its own
/// (`SBA_BENCH_SHARED_SESSIONS` measures the shared case).
struct Searchers {
    hnsw: DatabaseConnection,
    exact: DatabaseConnection,
}

impl Searchers {
    async fn connect(url: &str) -> Self {
        Self { hnsw: connect(url).await, exact: connect(url).await }
    }

    async fn close(self) {
        self.hnsw.close().await.unwrap();
        self.exact.close().await.unwrap();
    }

    const fn of(&self, side: Side) -> &DatabaseConnection {
        match side {
            Side::Hnsw => &self.hnsw,
            Side::Exact => &self.exact,
        }
    }
}

/// Cluster centres: unit vectors in random directions.
struct Clusters(Vec<Vec<f32>>);

impl Clusters {
    fn new(rng: &mut StdRng, count: usize) -> Self {
        Self((0..count).map(|_| normalized(gaussian(rng, 1.0))).collect())
    }

    /// A unit vector near a random centre, as an embedding of a chunk (or a question) on
    /// that centre's topic.
    fn sample(&self, rng: &mut StdRng) -> Vec<f32> {
        let centre = &self.0[rng.random_range(0..self.0.len())];
        normalized(centre.iter().zip(gaussian(rng, NOISE)).map(|(c, n)| c + n).collect())
    }
}

/// `DIMENSION` independent normal samples (Box–Muller).
fn gaussian(rng: &mut StdRng, sigma: f64) -> Vec<f32> {
    let mut values = Vec::with_capacity(DIMENSION);
    while values.len() < DIMENSION {
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt() * sigma;
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(DIMENSION);
    values
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in &mut v {
        *x /= norm;
    }
    v
}

/// pgvector's text form, `[x,y,…]`.
fn literal(v: &[f32]) -> String {
    let mut text = String::with_capacity(v.len() * 12 + 2);
    text.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        write!(text, "{x}").unwrap();
    }
    text.push(']');
    text
}

/// A loaded, indexed corpus on its own database.
struct Corpus {
    url: String,
    admin: DatabaseConnection,
    clusters: Clusters,
    large: Uuid,
    small: Uuid,
    index: String,
    setup: Setup,
}

/// What loading one corpus took.
struct Setup {
    load: Duration,
    index_build: Duration,
    vacuum_analyze: Duration,
    heap_mb: f64,
    index_mb: f64,
    index_definition: String,
    index_options: Option<String>,
}

/// One tenant's figures for one side, in milliseconds.
struct Latencies {
    p50: f64,
    p99: f64,
    mean: f64,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest rank: the value below which q of the samples lie.
        let at = |q: f64| {
            let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1e3
        };
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
        Self { p50: at(0.50), p99: at(0.99), mean: mean * 1e3 }
    }
}

/// One row of the results table.
struct Row {
    chunks: usize,
    tenant: &'static str,
    tenant_chunks: usize,
    hnsw: Latencies,
    exact: Latencies,
    recall: f64,
    index_scans: i64,
    short_answers: usize,
    queries: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    assert!(
        std::env::var_os(ADMIN_URL_VAR).is_some(),
        "{ADMIN_URL_VAR} is not set: run this benchmark with scripts/bench-knowledge.sh, which starts \
         the private PostgreSQL with pgvector"
    );
    let options = Options {
        sizes: std::env::var("SBA_BENCH_KNOWLEDGE_SIZES")
            .unwrap_or_else(|_| "10000,100000".into())
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or_else(|_| panic!("SBA_BENCH_KNOWLEDGE_SIZES: {s:?} is not a count")))
            .collect(),
        queries: std::env::var("SBA_BENCH_QUERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(200),
        until: std::env::var("SBA_BENCH_MIGRATIONS_UNTIL").ok(),
        extra_sql: std::env::var("SBA_BENCH_EXTRA_SQL").ok().filter(|sql| !sql.trim().is_empty()),
        keep_database: std::env::var("SBA_BENCH_KEEP_DATABASE").is_ok_and(|v| v == "1"),
        shared_sessions: std::env::var("SBA_BENCH_SHARED_SESSIONS").ok().map(|order| match order.as_str() {
            "large-first" => SharedOrder::LargeFirst,
            "small-first" => SharedOrder::SmallFirst,
            other => panic!("SBA_BENCH_SHARED_SESSIONS: {other:?} is neither large-first nor small-first"),
        }),
    };
    // A single-threaded runtime: on two shared cores PostgreSQL needs the other one.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(run(&options));
}

/// What the environment chose (see the module's documentation).
struct Options {
    sizes: Vec<usize>,
    queries: usize,
    until: Option<String>,
    extra_sql: Option<String>,
    keep_database: bool,
    shared_sessions: Option<SharedOrder>,
}

/// Which tenant searches first on shared connections.
#[derive(Clone, Copy, Debug)]
enum SharedOrder {
    LargeFirst,
    SmallFirst,
}

async fn run(options: &Options) {
    let migrations = migrations(options.until.as_deref());
    let names: Vec<String> =
        migrations.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    progress(&format!("migrations: test-bootstrap/00_supabase_roles.sql, {}", names.join(", ")));
    if let Some(sql) = &options.extra_sql {
        progress(&format!("then: {sql}"));
    }
    let mut rows = Vec::new();
    let mut setups = Vec::new();
    let mut settings = None;
    for &size in &options.sizes {
        let started = Instant::now();
        let corpus = load(size, &migrations, options.extra_sql.as_deref()).await;
        let (size_rows, size_settings) = search_all(&corpus, size, options).await;
        rows.extend(size_rows);
        settings = Some(size_settings);
        progress(&format!("{size} chunks: done in {:.0} s", started.elapsed().as_secs_f64()));
        setups.push((size, corpus.finish(options.keep_database).await));
    }

    println!();
    println!("migrations: {}", names.join(", "));
    if let Some(sql) = &options.extra_sql {
        println!("then: {sql}");
    }
    match options.shared_sessions {
        None => println!("sessions: each tenant on connections of its own (one per side)"),
        Some(order) => println!("sessions: both tenants on the same connections (one per side), {order:?}"),
    }
    if let Some(settings) = settings {
        println!("{settings}");
    }
    for (size, setup) in &setups {
        println!(
            "{size} chunks: index {} ({}); load {:.1} s, index build {:.1} s, vacuum analyze {:.1} s; \
             heap {:.0} MB, index {:.0} MB",
            setup.index_definition,
            setup.index_options.as_deref().unwrap_or("no options: m = 16, ef_construction = 64 (defaults)"),
            setup.load.as_secs_f64(),
            setup.index_build.as_secs_f64(),
            setup.vacuum_analyze.as_secs_f64(),
            setup.heap_mb,
            setup.index_mb,
        );
    }
    println!();
    println!(
        "| chunks | tenant (its chunks) | HNSW p50 / p99 / mean ms | exact p50 / p99 / mean ms | exact/HNSW p50 \
         | exact/HNSW mean | recall@10 | HNSW index scans | answers < 10 rows |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} ({}) | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.1}× | {:.1}× | {:.3} | {}/{} | {} |",
            r.chunks,
            r.tenant,
            r.tenant_chunks,
            r.hnsw.p50,
            r.hnsw.p99,
            r.hnsw.mean,
            r.exact.p50,
            r.exact.p99,
            r.exact.mean,
            r.exact.p50 / r.hnsw.p50,
            r.exact.mean / r.hnsw.mean,
            r.recall,
            r.index_scans,
            r.queries,
            r.short_answers,
        );
    }
}

fn progress(message: &str) {
    eprintln!("knowledge_search: {message}");
}

/// Every `2*.sql` of migrations/supabase/ in name order, up to version `until` if given.
fn migrations(until: Option<&str>) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../migrations/supabase");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with('2')
                && name.ends_with(".sql")
                && until.is_none_or(|until| name.get(..until.len()).is_some_and(|version| version <= until))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    files
}

async fn connect(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    // One connection: session settings and prepared statements stay on it.
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    Database::connect(options).await.unwrap()
}

async fn exec(conn: &impl ConnectionTrait, sql: &str) {
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", sql.chars().take(200).collect::<String>()));
}

async fn query_one(conn: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> QueryResult {
    conn.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A fresh database with the schema and `size` chunks, indexed and analysed.
async fn load(size: usize, migrations: &[PathBuf], extra_sql: Option<&str>) -> Corpus {
    let url = fresh_postgres_url().await;
    let admin = connect(&url).await;
    let bootstrap = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations/supabase/test-bootstrap/00_supabase_roles.sql");
    for file in std::iter::once(&bootstrap).chain(migrations) {
        exec(&admin, &std::fs::read_to_string(file).unwrap()).await;
    }
    if let Some(sql) = extra_sql {
        exec(&admin, sql).await;
    }

    // The index the migrations define, rebuilt after the load: inserting into an existing
    // HNSW graph row by row is far slower than building it once.
    let index = query_one(
        &admin,
        "select i.relname as name, pg_get_indexdef(i.oid) as definition,
                array_to_string(i.reloptions, ', ') as options
         from pg_index x
         join pg_class i on i.oid = x.indexrelid
         join pg_am a on a.oid = i.relam
         where x.indrelid = 'public.knowledge_chunks'::regclass and a.amname = 'hnsw'",
        vec![],
    )
    .await;
    let index_name: String = index.try_get("", "name").unwrap();
    let index_definition: String = index.try_get("", "definition").unwrap();
    let index_options: Option<String> = index.try_get("", "options").unwrap();
    exec(&admin, &format!("drop index public.{index_name}")).await;

    let (large, small) = (Uuid::now_v7(), Uuid::now_v7());
    exec(
        &admin,
        &format!("insert into tenants (id, name) values ('{large}', 'large'), ('{small}', 'small')"),
    )
    .await;
    let documents: Vec<(Uuid, Uuid)> = (0..size.div_ceil(CHUNKS_PER_DOCUMENT))
        .map(|d| {
            (Uuid::now_v7(), if d % SMALL_TENANT_EVERY == SMALL_TENANT_EVERY - 1 { small } else { large })
        })
        .collect();
    for batch in documents.chunks(1000) {
        let values: Vec<String> =
            batch.iter().map(|(id, tenant)| format!("('{id}', '{tenant}', 'document {id}')")).collect();
        exec(
            &admin,
            &format!("insert into knowledge_documents (id, tenant_id, title) values {}", values.join(",")),
        )
        .await;
    }

    let mut rng = StdRng::seed_from_u64(DATA_SEED ^ size as u64);
    let clusters = Clusters::new(&mut rng, (size / CHUNKS_PER_CLUSTER).max(1));
    progress(&format!("{size} chunks: loading ({} clusters)", clusters.0.len()));
    let started = Instant::now();
    insert_chunks(&admin, size, &documents, &clusters, &mut rng).await;
    let load = started.elapsed();

    progress(&format!("{size} chunks: building the HNSW index: {index_definition}"));
    let started = Instant::now();
    let tx = admin.begin().await.unwrap();
    exec(&tx, &format!("set local maintenance_work_mem = '{BUILD_MAINTENANCE_WORK_MEM}'")).await;
    exec(&tx, &index_definition).await;
    tx.commit().await.unwrap();
    let index_build = started.elapsed();
    progress(&format!("{size} chunks: index built in {:.1} s", index_build.as_secs_f64()));
    let started = Instant::now();
    exec(&admin, "vacuum (analyze) knowledge_documents, knowledge_chunks").await;
    let vacuum_analyze = started.elapsed();

    let sizes = query_one(
        &admin,
        "select pg_relation_size('public.knowledge_chunks')::float8 / 1048576 as heap,
                pg_relation_size($1::regclass)::float8 / 1048576 as index",
        vec![format!("public.{index_name}").into()],
    )
    .await;
    let setup = Setup {
        load,
        index_build,
        vacuum_analyze,
        heap_mb: sizes.try_get("", "heap").unwrap(),
        index_mb: sizes.try_get("", "index").unwrap(),
        index_definition,
        index_options,
    };
    Corpus { url, admin, clusters, large, small, index: index_name, setup }
}

/// Inserts `size` chunks, `CHUNKS_PER_DOCUMENT` per document (id, tenant) in order, with
/// embeddings drawn from `clusters`, `INSERT_ROWS` rows per statement.
async fn insert_chunks(
    admin: &DatabaseConnection,
    size: usize,
    documents: &[(Uuid, Uuid)],
    clusters: &Clusters,
    rng: &mut StdRng,
) {
    let started = Instant::now();
    let mut next_report = size / 10;
    for start in (0..size).step_by(INSERT_ROWS) {
        let mut sql = String::from(
            "insert into knowledge_chunks (tenant_id, document_id, ordinal, content, embedding) values ",
        );
        for i in start..(start + INSERT_ROWS).min(size) {
            let (document, tenant) = documents[i / CHUNKS_PER_DOCUMENT];
            if i > start {
                sql.push(',');
            }
            let ordinal = i % CHUNKS_PER_DOCUMENT;
            let embedding = literal(&clusters.sample(rng));
            write!(sql, "('{tenant}', '{document}', {ordinal}, 'chunk {i}', '{embedding}')").unwrap();
        }
        exec(admin, &sql).await;
        let loaded = (start + INSERT_ROWS).min(size);
        if loaded >= next_report {
            progress(&format!("{size} chunks: loaded {loaded} ({:.0} s)", started.elapsed().as_secs_f64()));
            next_report += size / 10;
        }
    }
}

impl Corpus {
    /// How often the HNSW index has been scanned, as the statistics say.
    async fn index_scans(&self, searchers: &Searchers) -> i64 {
        // A backend reports its counts when it goes idle after this.
        for searcher in [&searchers.hnsw, &searchers.exact] {
            exec(searcher, "select pg_stat_force_next_flush()").await;
        }
        let row = query_one(
            &self.admin,
            "select coalesce(sum(idx_scan), 0)::int8 as n from pg_stat_user_indexes where indexrelname = $1",
            vec![self.index.clone().into()],
        )
        .await;
        row.try_get("", "n").unwrap()
    }

    /// Drops the database (a few hundred MB at 100k chunks) unless `keep`, and returns the
    /// setup figures.
    async fn finish(self, keep: bool) -> Setup {
        self.admin.close().await.unwrap();
        if keep {
            progress(&format!("kept {} (drop it when done)", self.url));
            return self.setup;
        }
        let name = url::Url::parse(&self.url).unwrap().path().trim_start_matches('/').to_owned();
        let admin = Database::connect(admin_url()).await.unwrap();
        exec(&admin, &format!("drop database \"{name}\" with (force)")).await;
        admin.close().await.unwrap();
        self.setup
    }
}

/// One search as `tenant`: its latency (the `match_knowledge` statement alone; the
/// transaction, role and tenant context around it cost the same on both sides) and the ids
/// found, best first.
async fn search(searchers: &Searchers, side: Side, tenant: Uuid, query: &str) -> (Duration, Vec<Uuid>) {
    let tx = searchers.of(side).begin().await.unwrap();
    // As the owner, before the role switch: the API roles may not set a context (ADR 0014).
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "select set_tenant_context($1)",
        [tenant.into()],
    ))
    .await
    .unwrap();
    exec(&tx, side.settings()).await;
    let statement =
        Statement::from_sql_and_values(DbBackend::Postgres, SEARCH_SQL, [query.to_owned().into()]);
    let started = Instant::now();
    let rows = tx.query_all_raw(statement).await.unwrap();
    let elapsed = started.elapsed();
    tx.commit().await.unwrap();
    (elapsed, rows.iter().map(|row| row.try_get::<Uuid>("", "id").unwrap()).collect())
}

/// Both tenants' rows for one corpus, and a description of the search settings.
async fn search_all(corpus: &Corpus, size: usize, options: &Options) -> (Vec<Row>, String) {
    let small_chunks = (0..size)
        .filter(|i| (i / CHUNKS_PER_DOCUMENT) % SMALL_TENANT_EVERY == SMALL_TENANT_EVERY - 1)
        .count();
    let large = Tenant { id: corpus.large, label: "large", chunks: size - small_chunks, seed: 1 };
    let small = Tenant { id: corpus.small, label: "small", chunks: small_chunks, seed: 2 };
    let mut rows = Vec::new();
    match options.shared_sessions {
        None => {
            for tenant in [large, small] {
                let searchers = Searchers::connect(&corpus.url).await;
                rows.push(measure(corpus, &searchers, &tenant, size, options.queries).await);
                searchers.close().await;
            }
        }
        Some(order) => {
            let searchers = Searchers::connect(&corpus.url).await;
            let tenants = match order {
                SharedOrder::LargeFirst => [large, small],
                SharedOrder::SmallFirst => [small, large],
            };
            for tenant in tenants {
                rows.push(measure(corpus, &searchers, &tenant, size, options.queries).await);
            }
            searchers.close().await;
            rows.sort_by_key(|row| row.tenant != "large");
        }
    }
    (rows, describe_settings(&corpus.url).await)
}

/// A tenant of the corpus, and the seed of its queries (the same whatever the order).
struct Tenant {
    id: Uuid,
    label: &'static str,
    chunks: usize,
    seed: u64,
}

/// `queries` searches as `tenant` on both sides, after a warm-up.
async fn measure(
    corpus: &Corpus,
    searchers: &Searchers,
    tenant: &Tenant,
    size: usize,
    queries: usize,
) -> Row {
    let mut rng = StdRng::seed_from_u64(QUERY_SEED ^ ((size as u64) << 8) ^ tenant.seed);
    let warmup: Vec<String> =
        (0..WARMUP_QUERIES).map(|_| literal(&corpus.clusters.sample(&mut rng))).collect();
    let measured: Vec<String> = (0..queries).map(|_| literal(&corpus.clusters.sample(&mut rng))).collect();

    // Warm-up, exact side first: it reads the tenant's rows into the caches, and it must not
    // touch the HNSW index at all.
    let before = corpus.index_scans(searchers).await;
    for query in &warmup {
        search(searchers, Side::Exact, tenant.id, query).await;
    }
    let exact_scans = corpus.index_scans(searchers).await - before;
    assert_eq!(exact_scans, 0, "the exact side scanned the HNSW index");
    for query in &warmup {
        search(searchers, Side::Hnsw, tenant.id, query).await;
    }

    progress(&format!("{size} chunks: {queries} queries as the {} tenant", tenant.label));
    let before = corpus.index_scans(searchers).await;
    let (mut hnsw, mut exact) = (Vec::with_capacity(queries), Vec::with_capacity(queries));
    let (mut found, mut short_answers) = (0, 0);
    for (i, query) in measured.iter().enumerate() {
        let order = if i % 2 == 0 { [Side::Hnsw, Side::Exact] } else { [Side::Exact, Side::Hnsw] };
        let mut answers = [(Duration::ZERO, Vec::new()), (Duration::ZERO, Vec::new())];
        for side in order {
            answers[usize::from(side == Side::Exact)] = search(searchers, side, tenant.id, query).await;
        }
        let [(hnsw_time, hnsw_ids), (exact_time, exact_ids)] = answers;
        assert_eq!(exact_ids.len(), TOP_K, "the tenant has at least {TOP_K} chunks");
        let truth: HashSet<Uuid> = exact_ids.into_iter().collect();
        found += hnsw_ids.iter().filter(|id| truth.contains(id)).count();
        short_answers += usize::from(hnsw_ids.len() < TOP_K);
        hnsw.push(hnsw_time);
        exact.push(exact_time);
    }
    Row {
        chunks: size,
        tenant: tenant.label,
        tenant_chunks: tenant.chunks,
        hnsw: Latencies::of(hnsw),
        exact: Latencies::of(exact),
        recall: found as f64 / (queries * TOP_K) as f64,
        index_scans: corpus.index_scans(searchers).await - before,
        short_answers,
        queries,
    }
}

/// pgvector's version and the HNSW search settings, in a session and in `match_knowledge`.
async fn describe_settings(url: &str) -> String {
    let db = connect(url).await;
    // The hnsw.* settings exist once the library is loaded.
    exec(&db, "load 'vector'").await;
    let settings = query_one(
        &db,
        "select (select extversion from pg_extension where extname = 'vector') as version,
                current_setting('hnsw.ef_search', true) as ef_search,
                current_setting('hnsw.iterative_scan', true) as iterative_scan,
                current_setting('hnsw.max_scan_tuples', true) as max_scan_tuples,
                (select coalesce(array_to_string(proconfig, ', '), '-') from pg_proc
                 where oid = 'public.match_knowledge(vector, integer, double precision, jsonb)'::regprocedure)
                    as function_config",
        vec![],
    )
    .await;
    db.close().await.unwrap();
    let get =
        |column: &str| settings.try_get::<Option<String>>("", column).unwrap().unwrap_or_else(|| "-".into());
    format!(
        "pgvector {}; session: hnsw.ef_search = {}, hnsw.iterative_scan = {}, hnsw.max_scan_tuples = {}; \
         match_knowledge's own settings: {}; index build: maintenance_work_mem = \
         {BUILD_MAINTENANCE_WORK_MEM}",
        get("version"),
        get("ef_search"),
        get("iterative_scan"),
        get("max_scan_tuples"),
        get("function_config"),
    )
}
