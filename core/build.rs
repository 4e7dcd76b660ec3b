//! Compiles proto/rpc.proto with a pure-Rust protobuf compiler, so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = proto_dir.join("rpc.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The service has a method named `Connect`; the generated `connect` constructor would clash with it.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
