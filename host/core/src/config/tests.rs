//! The config's parsing: defaults, paths, refusals.

use super::*;

fn dir_with_plugin() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/a.wasm"), b"not checked here").unwrap();
    let file = dir.path().join("eshost.toml");
    (dir, file)
}

#[test]
fn a_postgres_url_names_the_store_and_the_data_directory_holds_derived_state() {
    let (dir, file) = dir_with_plugin();
    let config = Config::parse(
        "store = \"postgres://eshost@127.0.0.1:5432/eshost\"\ndata = \"node-a\"\n",
        &file,
    )
    .unwrap();
    let postgres = config.postgres.unwrap();
    assert_eq!(postgres.url, "postgres://eshost@127.0.0.1:5432/eshost");
    assert_eq!(
        postgres.key_encryption_key,
        dir.path().join("eshost.kek").display().to_string()
    );
    assert_eq!(config.store, dir.path().join("node-a"));
    let config = Config::parse(
        "store = \"postgres://h/db\"\nkey_encryption_key = \"env:KEK\"\n",
        &file,
    )
    .unwrap();
    assert_eq!(config.postgres.unwrap().key_encryption_key, "env:KEK");
    let error = Config::parse("store = \"postgres://h/db\"\nkeys = \"k\"\n", &file).unwrap_err();
    assert!(error.to_string().contains("`keys`"), "{error}");
    let error = Config::parse("store = \"dir\"\ndata = \"d\"\n", &file).unwrap_err();
    assert!(error.to_string().contains("`data`"), "{error}");
    assert!(
        Config::parse("store = \"dir\"\n", &file)
            .unwrap()
            .postgres
            .is_none()
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let (dir, file) = dir_with_plugin();
    let config = Config::parse(
        "store = \"data\"\n[[aggregates]]\nname = \"a\"\nplugin = \"plugins/a.wasm\"\n",
        &file,
    )
    .unwrap();
    assert_eq!(config.store, dir.path().join("data"));
    assert_eq!(
        config.aggregates[0].plugin,
        dir.path().join("plugins/a.wasm")
    );
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert!(config.ui, "the admin UI is on by default");
    assert!(!config.aggregates[0].instance_per_aggregate);
    let off = Config::parse("store = \"data\"\nui = false\n", &file).unwrap();
    assert!(!off.ui);
    let isolated = "store = \"d\"\n[[aggregates]]\nname = \"a\"\nplugin = \"plugins/a.wasm\"\n\
                    instance_per_aggregate = true\n";
    assert!(Config::parse(isolated, &file).unwrap().aggregates[0].instance_per_aggregate);
}

#[test]
fn unknown_keys_are_refused_naming_the_key_and_file() {
    let (_dir, file) = dir_with_plugin();
    let error = Config::parse("store = \"data\"\nlisten_on = \"x\"\n", &file).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("listen_on"), "{message}");
    assert!(message.contains("eshost.toml"), "{message}");
    let error = Config::parse(
        "store = \"d\"\n[[projections]]\nname = \"p\"\nplugin = \"plugins/a.wasm\"\nbatchsize = 3\n",
        &file,
    )
    .unwrap_err();
    assert!(error.to_string().contains("batchsize"), "{error}");
}

#[test]
fn a_missing_plugin_file_is_refused_naming_the_key() {
    let (_dir, file) = dir_with_plugin();
    let error = Config::parse(
        "store = \"d\"\n[[projections]]\nname = \"p\"\nplugin = \"nope.wasm\"\n",
        &file,
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("projections[0].plugin"), "{message}");
    assert!(message.contains("nope.wasm"), "{message}");
}

#[test]
fn a_plugin_limits_table_overrides_the_top_level_key_by_key() {
    let (_dir, file) = dir_with_plugin();
    std::fs::write(file.with_file_name("plugins/b.wasm"), b"x").unwrap();
    let config = Config::parse(
        "store = \"d\"\n[limits]\ntime_ms = 500\nmemory_mb = 16\n\
         [[aggregates]]\nname = \"a\"\nplugin = \"plugins/a.wasm\"\n\
         limits = { memory_mb = 256 }\n\
         [[projections]]\nname = \"b\"\nplugin = \"plugins/b.wasm\"\n",
        &file,
    )
    .unwrap();
    let a = config.plugin_limits("a");
    assert_eq!(a.memory_bytes, 256 * 1024 * 1024);
    assert_eq!(a.time, Duration::from_millis(500), "from [limits]");
    assert_eq!(
        a.output_bytes,
        Limits::default().output_bytes,
        "the default"
    );
    let b = config.plugin_limits("b");
    assert_eq!(b, config.limits);
    assert_eq!(b.memory_bytes, 16 * 1024 * 1024);
}

#[test]
fn bad_plugin_limits_are_refused_naming_the_key() {
    let (_dir, file) = dir_with_plugin();
    let aggregate = "store = \"d\"\n[[aggregates]]\nname = \"a\"\nplugin = \"plugins/a.wasm\"\n";
    let error = Config::parse(&format!("{aggregate}limits = {{ memroy_mb = 1 }}\n"), &file)
        .unwrap_err()
        .to_string();
    assert!(error.contains("memroy_mb"), "{error}");
    let error = Config::parse(&format!("{aggregate}limits = {{ memory_mb = 0 }}\n"), &file)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`aggregates[0].limits.memory_mb`: must be positive"),
        "{error}"
    );
    let error = Config::parse("store = \"d\"\n[limits]\ntime_ms = 0\n", &file)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`limits.time_ms`: must be positive"),
        "{error}"
    );
}

#[test]
fn a_stream_prefix_is_read_and_a_bad_one_refused_naming_the_key() {
    let (_dir, file) = dir_with_plugin();
    let aggregate = "store = \"d\"\n[[aggregates]]\nname = \"a\"\nplugin = \"plugins/a.wasm\"\n";
    let config = Config::parse(aggregate, &file).unwrap();
    assert_eq!(
        config.aggregates[0].stream_prefix, "",
        "default: the id is the stream"
    );
    let config = Config::parse(&format!("{aggregate}stream_prefix = \"a-\"\n"), &file).unwrap();
    assert_eq!(config.aggregates[0].stream_prefix, "a-");
    for (prefix, why) in [
        ("$a-", "starts with '$'"),
        ("a\\u0007", "control characters"),
        (&"p".repeat(65), "longer than 64 bytes"),
    ] {
        let error = Config::parse(&format!("{aggregate}stream_prefix = \"{prefix}\"\n"), &file)
            .unwrap_err()
            .to_string();
        assert!(error.contains("aggregates[0].stream_prefix"), "{error}");
        assert!(error.contains(why), "{error}");
    }
}
