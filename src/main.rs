fn main() {
    print!("{}", ringfence::api::crd_yaml());
}
