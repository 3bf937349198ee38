#include "checkpoint/hdf5_file.h"

#include <fmt/format.h>

#include <cstring>
#include <functional>
#include <mutex>

#include "common/error.h"

namespace moe {

namespace {

// Closes an HDF5 handle with the right close function when it leaves scope.
class Handle {
   public:
    using Closer = herr_t (*)(hid_t);
    Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
    ~Handle() {
        if (id_ >= 0) closer_(id_);
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    hid_t get() const { return id_; }
    bool ok() const { return id_ >= 0; }

   private:
    hid_t id_;
    Closer closer_;
};

std::vector<hsize_t> to_dims(const std::vector<int64_t>& shape) {
    return std::vector<hsize_t>(shape.begin(), shape.end());
}

}  // namespace

void initialise_hdf5() {
    static std::once_flag once;
    std::call_once(once, [] {
        // HDF5 1.10 crashes in its exit handler when a file failed to close (a write that hit a
        // full disk); the process is ending anyway, so skip that clean-up. This must come before
        // any other HDF5 call initialises the library (hence every caller goes through here).
        H5dont_atexit();
        // HDF5 prints its error stack to stderr by default; our exceptions say what failed instead.
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    });
}

std::string hdf5_library_version() {
    initialise_hdf5();
    unsigned maj = 0, min = 0, rel = 0;
    if (H5get_libversion(&maj, &min, &rel) < 0) return "";
    return fmt::format("{}.{}.{}", maj, min, rel);
}

Hdf5File Hdf5File::create(const std::string& path) {
    initialise_hdf5();
    hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (id < 0) throw CheckpointError(fmt::format("{}: cannot create HDF5 file (H5Fcreate failed)", path));
    return Hdf5File(path, id);
}

Hdf5File Hdf5File::open_read(const std::string& path) {
    initialise_hdf5();
    hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0) throw CheckpointError(fmt::format("{}: cannot open as HDF5 (H5Fopen failed)", path));
    return Hdf5File(path, id);
}

Hdf5File::Hdf5File(Hdf5File&& o) noexcept : path_(std::move(o.path_)), id_(o.id_) { o.id_ = -1; }

Hdf5File::~Hdf5File() {
    if (id_ >= 0) H5Fclose(id_);
}

void Hdf5File::close() {
    if (id_ < 0) return;
    hid_t id = id_;
    id_ = -1;
    if (H5Fclose(id) < 0) throw CheckpointError(fmt::format("{}: H5Fclose failed", path_));
}

void Hdf5File::fail(const std::string& call, const std::string& object) const {
    throw CheckpointError(fmt::format("{}: {} failed for '{}'", path_, call, object));
}

void Hdf5File::create_group(const std::string& group) {
    size_t pos = 1;
    while (pos <= group.size()) {
        size_t next = group.find('/', pos);
        if (next == std::string::npos) next = group.size();
        std::string prefix = group.substr(0, next);
        if (!prefix.empty() && prefix != "/") {
            htri_t e = H5Lexists(id_, prefix.c_str(), H5P_DEFAULT);
            if (e < 0) fail("H5Lexists", prefix);
            if (e == 0) {
                Handle g(H5Gcreate2(id_, prefix.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
                if (!g.ok()) fail("H5Gcreate2", prefix);
            }
        }
        pos = next + 1;
    }
}

static std::string parent_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

int64_t Hdf5File::reserve_floats(const std::string& path, const std::vector<int64_t>& shape) {
    create_group(parent_of(path));
    auto dims = to_dims(shape);
    Handle space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
    if (!space.ok()) fail("H5Screate_simple", path);
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (!dcpl.ok()) fail("H5Pcreate(H5P_DATASET_CREATE)", path);
    if (H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS) < 0) fail("H5Pset_layout", path);
    if (H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY) < 0) fail("H5Pset_alloc_time", path);
    if (H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0) fail("H5Pset_fill_time", path);
    Handle set(H5Dcreate2(id_, path.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
               H5Dclose);
    if (!set.ok()) fail("H5Dcreate2", path);
    int64_t elements = 1;
    for (int64_t d : shape) elements *= d;
    if (elements == 0) return -1;
    haddr_t offset = H5Dget_offset(set.get());
    if (offset == HADDR_UNDEF) fail("H5Dget_offset", path);
    return int64_t(offset);
}

void Hdf5File::write_bytes(const std::string& path, const std::vector<uint8_t>& data) {
    create_group(parent_of(path));
    hsize_t n = data.size();
    Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    if (!space.ok()) fail("H5Screate_simple", path);
    Handle set(H5Dcreate2(id_, path.c_str(), H5T_STD_U8LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
               H5Dclose);
    if (!set.ok()) fail("H5Dcreate2", path);
    if (n > 0 && H5Dwrite(set.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0)
        fail("H5Dwrite", path);
}

namespace {

template <typename WriteFn>
void put_attribute(hid_t file, const std::string& object, const std::string& name, hid_t file_type,
                   WriteFn write, const std::function<void(const std::string&)>& fail) {
    Handle obj(H5Oopen(file, object.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.ok()) fail("H5Oopen");
    htri_t e = H5Aexists(obj.get(), name.c_str());
    if (e < 0) fail("H5Aexists");
    if (e > 0 && H5Adelete(obj.get(), name.c_str()) < 0) fail("H5Adelete");
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    if (!space.ok()) fail("H5Screate");
    Handle attr(H5Acreate2(obj.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attr.ok()) fail("H5Acreate2");
    if (write(attr.get()) < 0) fail("H5Awrite");
}

}  // namespace

void Hdf5File::set_attribute(const std::string& object, const std::string& name, int64_t value) {
    put_attribute(id_, object, name, H5T_STD_I64LE, [&](hid_t a) { return H5Awrite(a, H5T_NATIVE_INT64, &value); },
                  [&](const std::string& call) { fail(call, object + "@" + name); });
}

void Hdf5File::set_attribute(const std::string& object, const std::string& name, double value) {
    put_attribute(id_, object, name, H5T_IEEE_F64LE, [&](hid_t a) { return H5Awrite(a, H5T_NATIVE_DOUBLE, &value); },
                  [&](const std::string& call) { fail(call, object + "@" + name); });
}

void Hdf5File::set_attribute(const std::string& object, const std::string& name, const std::string& value) {
    // Fixed-length UTF-8 string (h5py reads it as bytes or str).
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!type.ok() || H5Tset_size(type.get(), std::max<size_t>(1, value.size())) < 0 ||
        H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0)
        fail("H5Tcopy/H5Tset_size", object + "@" + name);
    std::string padded = value.empty() ? std::string(1, '\0') : value;
    put_attribute(id_, object, name, type.get(), [&](hid_t a) { return H5Awrite(a, type.get(), padded.data()); },
                  [&](const std::string& call) { fail(call, object + "@" + name); });
}

bool Hdf5File::exists(const std::string& path) const {
    if (path == "/") return true;
    // Check every prefix: H5Lexists fails (rather than returning 0) when a parent is missing.
    size_t pos = 1;
    while (true) {
        size_t next = path.find('/', pos);
        std::string prefix = path.substr(0, next);
        htri_t e = H5Lexists(id_, prefix.c_str(), H5P_DEFAULT);
        if (e <= 0) return false;
        if (next == std::string::npos) return true;
        pos = next + 1;
    }
}

std::vector<int64_t> Hdf5File::shape(const std::string& dataset) const {
    Handle set(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!set.ok()) fail("H5Dopen2", dataset);
    Handle space(H5Dget_space(set.get()), H5Sclose);
    if (!space.ok()) fail("H5Dget_space", dataset);
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail("H5Sget_simple_extent_ndims", dataset);
    std::vector<hsize_t> dims(rank);
    if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) fail("H5Sget_simple_extent_dims", dataset);
    return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string Hdf5File::dtype(const std::string& dataset) const {
    Handle set(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!set.ok()) fail("H5Dopen2", dataset);
    Handle type(H5Dget_type(set.get()), H5Tclose);
    if (!type.ok()) fail("H5Dget_type", dataset);
    const H5T_class_t cls = H5Tget_class(type.get());
    const size_t bytes = H5Tget_size(type.get());
    if (cls == H5T_NO_CLASS || bytes == 0) fail("H5Tget_class/H5Tget_size", dataset);
    const char* kind = cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "int" : "other";
    return fmt::format("{}{}", kind, bytes * 8);
}

void Hdf5File::check_plain_storage(const std::string& dataset) const {
    Handle set(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!set.ok()) fail("H5Dopen2", dataset);
    Handle plist(H5Dget_create_plist(set.get()), H5Pclose);
    if (!plist.ok()) fail("H5Dget_create_plist", dataset);
    // External storage reads other files (even /dev/zero) that the shard's SHA-256 does not cover;
    // a virtual dataset maps other datasets or files. Neither is ever written by moe-train.
    const int external = H5Pget_external_count(plist.get());
    if (external < 0) fail("H5Pget_external_count", dataset);
    if (external > 0)
        throw CheckpointError(fmt::format("{}: dataset '{}' keeps its data in {} external file(s); refused (the "
                                          "checksums cover only the shard)", path_, dataset, external));
    const H5D_layout_t layout = H5Pget_layout(plist.get());
    if (layout < 0) fail("H5Pget_layout", dataset);
    if (layout == H5D_VIRTUAL)
        throw CheckpointError(fmt::format("{}: dataset '{}' is a virtual dataset (data from elsewhere); refused", path_,
                                          dataset));
}

void Hdf5File::read_floats(const std::string& dataset, float* out, int64_t count) const {
    check_plain_storage(dataset);
    auto dims = shape(dataset);
    int64_t n = 1;
    for (auto d : dims) n *= d;
    if (n != count)
        throw CheckpointError(fmt::format("{}: dataset '{}' has {} elements, expected {}", path_, dataset, n, count));
    Handle set(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!set.ok()) fail("H5Dopen2", dataset);
    Handle type(H5Dget_type(set.get()), H5Tclose);
    if (!type.ok()) fail("H5Dget_type", dataset);
    if (H5Tget_class(type.get()) != H5T_FLOAT || H5Tget_size(type.get()) != 4)
        throw CheckpointError(fmt::format("{}: dataset '{}' is not float32", path_, dataset));
    if (n > 0 && H5Dread(set.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) fail("H5Dread", dataset);
}

std::vector<uint8_t> Hdf5File::read_bytes(const std::string& dataset, int64_t max_bytes) const {
    check_plain_storage(dataset);
    auto dims = shape(dataset);
    if (dims.size() != 1) throw CheckpointError(fmt::format("{}: dataset '{}' is not a byte vector", path_, dataset));
    // The size is checked before anything is allocated: a crafted shard may declare terabytes.
    if (dims[0] > max_bytes)
        throw CheckpointError(fmt::format("{}: dataset '{}' declares {} bytes, at most {} expected", path_, dataset,
                                          dims[0], max_bytes));
    if (dtype(dataset) != "int8")
        throw CheckpointError(fmt::format("{}: dataset '{}' has dtype {}, expected bytes", path_, dataset, dtype(dataset)));
    std::vector<uint8_t> out(static_cast<size_t>(dims[0]));
    Handle set(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!set.ok()) fail("H5Dopen2", dataset);
    if (!out.empty() && H5Dread(set.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
        fail("H5Dread", dataset);
    return out;
}

namespace {

Handle open_attribute(hid_t file, const std::string& object, const std::string& name,
                      const std::function<void(const std::string&)>& fail) {
    Handle obj(H5Oopen(file, object.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.ok()) fail("H5Oopen");
    hid_t a = H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT);
    if (a < 0) fail("H5Aopen (missing attribute)");
    return Handle(a, H5Aclose);
}

}  // namespace

int64_t Hdf5File::attribute_int(const std::string& object, const std::string& name) const {
    auto f = [&](const std::string& call) { fail(call, object + "@" + name); };
    Handle a = open_attribute(id_, object, name, f);
    int64_t v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) f("H5Aread");
    return v;
}

double Hdf5File::attribute_double(const std::string& object, const std::string& name) const {
    auto f = [&](const std::string& call) { fail(call, object + "@" + name); };
    Handle a = open_attribute(id_, object, name, f);
    double v = 0;
    if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0) f("H5Aread");
    return v;
}

std::string Hdf5File::attribute_string(const std::string& object, const std::string& name) const {
    auto f = [&](const std::string& call) { fail(call, object + "@" + name); };
    Handle a = open_attribute(id_, object, name, f);
    Handle type(H5Aget_type(a.get()), H5Tclose);
    if (!type.ok() || H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0)
        f("H5Aget_type (not a fixed-length string)");
    std::string s(H5Tget_size(type.get()), '\0');
    if (H5Aread(a.get(), type.get(), s.data()) < 0) f("H5Aread");
    s.resize(std::strlen(s.c_str()));
    return s;
}

std::vector<std::string> Hdf5File::list(const std::string& group) const {
    Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) fail("H5Gopen2", group);
    // H5Gget_info + H5Lget_name_by_idx: the same API in HDF5 1.10 and 1.12+ (H5Literate changed).
    H5G_info_t info;
    if (H5Gget_info(g.get(), &info) < 0) fail("H5Gget_info", group);
    std::vector<std::string> names;
    for (hsize_t i = 0; i < info.nlinks; ++i) {
        ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
        if (len < 0) fail("H5Lget_name_by_idx", group);
        std::string name(size_t(len) + 1, '\0');
        if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT) < 0)
            fail("H5Lget_name_by_idx", group);
        name.resize(size_t(len));
        names.push_back(std::move(name));
    }
    return names;
}

}  // namespace moe
